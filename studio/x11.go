package studio

/*
#cgo LDFLAGS: -lX11
#include <X11/Xlib.h>
#include <X11/Xutil.h>

// lathe_put shows a 32-bit BGRX image in the window with XPutImage. It returns 0, or -1 when the
// window's visual is not 24-bit TrueColor with the usual masks (the image's layout).
static int lathe_put(Display *d, Window w, char *bgrx, int width, int height) {
	XWindowAttributes wa;
	if (!XGetWindowAttributes(d, w, &wa)) return -2;
	Visual *vis = wa.visual;
	if ((wa.depth != 24 && wa.depth != 32) || vis->red_mask != 0xff0000 || vis->green_mask != 0xff00 || vis->blue_mask != 0xff) return -1;
	XImage *img = XCreateImage(d, vis, wa.depth, ZPixmap, 0, bgrx, width, height, 32, width * 4);
	if (!img) return -3;
	img->byte_order = LSBFirst; // the bytes are B, G, R, X: Xlib swaps for a big-endian server
	GC gc = XCreateGC(d, w, 0, NULL);
	XPutImage(d, w, gc, img, 0, 0, 0, 0, width, height);
	XFreeGC(d, gc);
	img->data = NULL; // the Go caller owns the pixels
	XDestroyImage(img);
	XSync(d, False);
	return 0;
}
*/
import "C"

import (
	"fmt"
	"image"
	"unsafe"
)

// x11Presenter is the software path: the picture rendered in Go goes to the window with
// XPutImage on GLFW's own X11 connection. It needs no GPU and no GL, so a CPU-backend run
// opens no device for its window.
type x11Presenter struct {
	display unsafe.Pointer // Display*
	window  uint64
	buf     []byte
}

func (p *x11Presenter) name() string { return "x11" }

func (p *x11Presenter) present(img *image.RGBA, lines []Line) error {
	drawLines(img, lines)
	w, h := img.Rect.Dx(), img.Rect.Dy()
	if w <= 0 || h <= 0 {
		return nil
	}
	if len(p.buf) < 4*w*h {
		p.buf = make([]byte, 4*w*h)
	}
	for y := range h {
		row := img.Pix[y*img.Stride : y*img.Stride+4*w]
		out := p.buf[4*w*y : 4*w*(y+1)]
		for x := 0; x < 4*w; x += 4 {
			out[x], out[x+1], out[x+2], out[x+3] = row[x+2], row[x+1], row[x], 0xff
		}
	}
	rc := C.lathe_put((*C.Display)(p.display), C.Window(p.window), (*C.char)(unsafe.Pointer(&p.buf[0])), C.int(w), C.int(h))
	if rc != 0 {
		return fmt.Errorf("studio: the window's X11 visual cannot show a 24-bit RGB image (%d)", int(rc))
	}
	return nil
}

func (p *x11Presenter) release() {}
