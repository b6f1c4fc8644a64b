// Package xwin drives an X11 window from outside, as a user and a window manager would, for the
// studio's tests: find a top-level window by its title, read its pixels back from the X server
// (XGetImage: what the screen shows, however it was drawn), send it keys and ask it to close
// (WM_DELETE_WINDOW, what a title bar's close button sends).
package xwin

/*
#cgo LDFLAGS: -lX11
#include <stdlib.h>
#include <string.h>
#include <X11/Xlib.h>
#include <X11/Xutil.h>

static int lathe_quiet(Display *d, XErrorEvent *e) { return 0; }

// lathe_find is the window whose WM_NAME is title, searched depth first under w, or 0.
static Window lathe_find(Display *d, Window w, const char *title) {
	char *name = NULL;
	if (XFetchName(d, w, &name) && name) {
		int same = strcmp(name, title) == 0;
		XFree(name);
		if (same) return w;
	}
	Window root, parent, *kids = NULL;
	unsigned int n = 0;
	if (!XQueryTree(d, w, &root, &parent, &kids, &n)) return 0;
	Window found = 0;
	for (unsigned int i = 0; i < n && !found; i++) found = lathe_find(d, kids[i], title);
	if (kids) XFree(kids);
	return found;
}

static Window lathe_find_root(Display *d, const char *title) {
	XSetErrorHandler(lathe_quiet); // windows may vanish while the tree is walked
	return lathe_find(d, DefaultRootWindow(d), title);
}

// lathe_get copies the window's pixels as 0xRRGGBB words into out (width*height of them).
static int lathe_get(Display *d, Window w, unsigned int *out, int width, int height) {
	XImage *img = XGetImage(d, w, 0, 0, width, height, AllPlanes, ZPixmap);
	if (!img) return -1;
	for (int y = 0; y < height; y++)
		for (int x = 0; x < width; x++) {
			unsigned long p = XGetPixel(img, x, y);
			unsigned int r = (p & img->red_mask) >> __builtin_ctzl(img->red_mask);
			unsigned int g = (p & img->green_mask) >> __builtin_ctzl(img->green_mask);
			unsigned int b = (p & img->blue_mask) >> __builtin_ctzl(img->blue_mask);
			out[y * width + x] = (r << 16) | (g << 8) | b;
		}
	XDestroyImage(img);
	return 0;
}

static int lathe_size(Display *d, Window w, int *width, int *height) {
	XWindowAttributes wa;
	if (!XGetWindowAttributes(d, w, &wa)) return -1;
	*width = wa.width;
	*height = wa.height;
	return 0;
}

static void lathe_close(Display *d, Window w) {
	XEvent e;
	memset(&e, 0, sizeof e);
	e.xclient.type = ClientMessage;
	e.xclient.window = w;
	e.xclient.message_type = XInternAtom(d, "WM_PROTOCOLS", False);
	e.xclient.format = 32;
	e.xclient.data.l[0] = XInternAtom(d, "WM_DELETE_WINDOW", False);
	e.xclient.data.l[1] = CurrentTime;
	XSendEvent(d, w, False, NoEventMask, &e);
	XFlush(d);
}

static void lathe_key(Display *d, Window w, const char *keysym) {
	KeySym ks = XStringToKeysym(keysym);
	XEvent e;
	memset(&e, 0, sizeof e);
	e.xkey.display = d;
	e.xkey.window = w;
	e.xkey.root = DefaultRootWindow(d);
	e.xkey.same_screen = True;
	e.xkey.keycode = XKeysymToKeycode(d, ks);
	e.xkey.time = CurrentTime;
	e.xkey.type = KeyPress;
	XSendEvent(d, w, True, KeyPressMask, &e);
	e.xkey.type = KeyRelease;
	XSendEvent(d, w, True, KeyReleaseMask, &e);
	XFlush(d);
}
*/
import "C"

import (
	"fmt"
	"image"
	"image/color"
	"unsafe"
)

// Window is a top-level window on a display.
type Window struct {
	d *C.Display
	w C.Window
}

// Find connects to display (":N") and finds the window titled title.
func Find(display, title string) (*Window, error) {
	cd := C.CString(display)
	defer C.free(unsafe.Pointer(cd))
	d := C.XOpenDisplay(cd)
	if d == nil {
		return nil, fmt.Errorf("xwin: cannot open display %s", display)
	}
	ct := C.CString(title)
	defer C.free(unsafe.Pointer(ct))
	w := C.lathe_find_root(d, ct)
	if w == 0 {
		C.XCloseDisplay(d)
		return nil, fmt.Errorf("xwin: no window titled %q on %s", title, display)
	}
	return &Window{d: d, w: w}, nil
}

// Screenshot reads the window's pixels back from the X server.
func (w *Window) Screenshot() (*image.RGBA, error) {
	var cw, ch C.int
	if C.lathe_size(w.d, w.w, &cw, &ch) != 0 {
		return nil, fmt.Errorf("xwin: the window is gone")
	}
	width, height := int(cw), int(ch)
	words := make([]C.uint, width*height)
	if C.lathe_get(w.d, w.w, &words[0], cw, ch) != 0 {
		return nil, fmt.Errorf("xwin: XGetImage failed")
	}
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	for i, p := range words {
		img.Set(i%width, i/width, color.RGBA{uint8(p >> 16), uint8(p >> 8), uint8(p), 0xff})
	}
	return img, nil
}

// Key sends a key press and release, by its X keysym name ("F2", "Return", "a").
func (w *Window) Key(keysym string) {
	ck := C.CString(keysym)
	defer C.free(unsafe.Pointer(ck))
	C.lathe_key(w.d, w.w, ck)
}

// Close asks the window to close, as a window manager's close button does.
func (w *Window) Close() { C.lathe_close(w.d, w.w) }

// Release closes the connection to the display.
func (w *Window) Release() { C.XCloseDisplay(w.d) }
