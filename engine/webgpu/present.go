package webgpu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/color"
	"math"
	"unsafe"

	"github.com/oliverbestmann/webgpu/wgpu"
)

// Surface shows images in a window through the backend's own device: the window that watches a
// training run draws with the device that trains, so no second device (or driver) is opened.
// Its methods hold the backend's lock, like every other call, so a frame is drawn between the
// training step's submissions and reads.
type Surface struct {
	b        *Backend
	surf     *wgpu.Surface
	format   wgpu.TextureFormat
	alpha    wgpu.CompositeAlphaMode
	module   *wgpu.ShaderModule
	pipe     *wgpu.RenderPipeline
	tex      *wgpu.Texture
	texView  *wgpu.TextureView
	group    *wgpu.BindGroup
	w, h     int
	released bool

	// The lines' pipeline: a uniform with the window's size, and the vertices (position and
	// colour) of every line of a frame.
	linePipe  *wgpu.RenderPipeline
	uniform   *wgpu.Buffer
	lineGroup *wgpu.BindGroup
	vertices  *wgpu.Buffer
	vertCap   uint64
}

// Line is a polyline the device draws over the image, three pixels wide, in one colour: the
// points are pixel positions (x right, y down from the top left), x0, y0, x1, y1, ...
type Line struct {
	Points []float32
	Color  color.RGBA
}

// presentWGSL draws a full-window triangle whose fragments load the image's texel under them
// (the texture has the window's size, so no sampler or filtering is needed).
const presentWGSL = `
@group(0) @binding(0) var img: texture_2d<f32>;

@vertex
fn vs_main(@builtin(vertex_index) i: u32) -> @builtin(position) vec4<f32> {
	let x = f32(i32(i & 1u) * 4 - 1);
	let y = f32(i32(i >> 1u) * 4 - 1);
	return vec4<f32>(x, y, 0.0, 1.0);
}

@fragment
fn fs_main(@builtin(position) p: vec4<f32>) -> @location(0) vec4<f32> {
	return textureLoad(img, vec2<i32>(p.xy), 0);
}

// A line strip drawn nine times, offset by a pixel in each direction: three pixels wide.
struct Window { size: vec2<f32>, pad: vec2<f32> };
@group(0) @binding(0) var<uniform> win: Window;

struct LineOut {
	@builtin(position) pos: vec4<f32>,
	@location(0) color: vec4<f32>,
};

@vertex
fn vs_line(@location(0) p: vec2<f32>, @location(1) color: vec4<f32>, @builtin(instance_index) k: u32) -> LineOut {
	let q = p + vec2<f32>(f32(i32(k % 3u) - 1), f32(i32(k / 3u) - 1)) + vec2<f32>(0.5, 0.5);
	var out: LineOut;
	out.pos = vec4<f32>(q.x / win.size.x * 2.0 - 1.0, 1.0 - q.y / win.size.y * 2.0, 0.0, 1.0);
	out.color = color;
	return out;
}

@fragment
fn fs_line(@location(0) color: vec4<f32>) -> @location(0) vec4<f32> {
	return color;
}
`

// NewXlibSurface makes a surface on an X11 window from its native handles (an Xlib Display*
// and the window's XID, as GLFW's GetX11Display and GetX11Window give them) on the backend's
// instance, for the backend's device.
func (b *Backend) NewXlibSurface(display unsafe.Pointer, window uint64) (s *Surface, err error) {
	if display == nil || window == 0 {
		return nil, errors.New("webgpu: surface: no X11 display or window")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.check(); err != nil {
		return nil, err
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("webgpu: surface: %v", r)
		}
		if err != nil && s != nil {
			s.release()
			s = nil
		}
	}()
	s = &Surface{b: b}
	s.surf = b.inst.CreateSurface(&wgpu.SurfaceDescriptor{Label: "lathe window",
		XlibWindow: &wgpu.SurfaceSourceXlibWindow{Display: display, Window: uint32(window)}})
	caps := s.surf.GetCapabilities(b.adapter)
	if len(caps.Formats) == 0 {
		return s, fmt.Errorf("webgpu: surface: %s cannot present to this window", b.info.Name)
	}
	// An 8-bit format the image's bytes go into unchanged; an sRGB one works too, because the
	// image's texture is then sRGB as well and the conversions cancel.
	s.format = caps.Formats[0]
	for _, f := range caps.Formats {
		if f == wgpu.TextureFormatBGRA8Unorm || f == wgpu.TextureFormatRGBA8Unorm {
			s.format = f
			break
		}
	}
	if texFormat(s.format) == wgpu.TextureFormatUndefined {
		return s, fmt.Errorf("webgpu: surface: no 8-bit RGBA format (the window offers %v)", caps.Formats)
	}
	s.alpha = caps.AlphaModes[0]
	if s.module, err = b.dev.TryCreateShaderModule(&wgpu.ShaderModuleDescriptor{Label: "lathe present",
		WGSLSource: &wgpu.ShaderSourceWGSL{Code: presentWGSL}}); err != nil {
		return s, fmt.Errorf("webgpu: surface: %w", err)
	}
	s.pipe, err = b.dev.TryCreateRenderPipeline(&wgpu.RenderPipelineDescriptor{
		Label:       "lathe present",
		Vertex:      wgpu.VertexState{Module: s.module, EntryPoint: "vs_main"},
		Primitive:   wgpu.PrimitiveState{Topology: wgpu.PrimitiveTopologyTriangleList, FrontFace: wgpu.FrontFaceCCW, CullMode: wgpu.CullModeNone},
		Multisample: wgpu.MultisampleState{Count: 1, Mask: 0xFFFFFFFF},
		Fragment: &wgpu.FragmentState{Module: s.module, EntryPoint: "fs_main",
			Targets: []wgpu.ColorTargetState{{Format: s.format, Blend: &wgpu.BlendStateReplace, WriteMask: wgpu.ColorWriteMaskAll}}},
	})
	if err != nil {
		return s, fmt.Errorf("webgpu: surface: %w", err)
	}
	s.linePipe, err = b.dev.TryCreateRenderPipeline(&wgpu.RenderPipelineDescriptor{
		Label: "lathe lines",
		Vertex: wgpu.VertexState{Module: s.module, EntryPoint: "vs_line", Buffers: []wgpu.VertexBufferLayout{{
			ArrayStride: 24, StepMode: wgpu.VertexStepModeVertex, Attributes: []wgpu.VertexAttribute{
				{Format: wgpu.VertexFormatFloat32x2, Offset: 0, ShaderLocation: 0},
				{Format: wgpu.VertexFormatFloat32x4, Offset: 8, ShaderLocation: 1}}}}},
		Primitive:   wgpu.PrimitiveState{Topology: wgpu.PrimitiveTopologyLineStrip, FrontFace: wgpu.FrontFaceCCW, CullMode: wgpu.CullModeNone},
		Multisample: wgpu.MultisampleState{Count: 1, Mask: 0xFFFFFFFF},
		Fragment: &wgpu.FragmentState{Module: s.module, EntryPoint: "fs_line",
			Targets: []wgpu.ColorTargetState{{Format: s.format, Blend: &wgpu.BlendStateReplace, WriteMask: wgpu.ColorWriteMaskAll}}},
	})
	if err != nil {
		return s, fmt.Errorf("webgpu: surface: %w", err)
	}
	if s.uniform, err = b.dev.TryCreateBuffer(&wgpu.BufferDescriptor{Label: "lathe window size",
		Usage: wgpu.BufferUsageUniform | wgpu.BufferUsageCopyDst, Size: 16}); err != nil {
		return s, fmt.Errorf("webgpu: surface: %w", err)
	}
	if s.lineGroup, err = b.dev.TryCreateBindGroup(&wgpu.BindGroupDescriptor{Layout: s.linePipe.GetBindGroupLayout(0),
		Entries: []wgpu.BindGroupEntry{{Binding: 0, Buffer: s.uniform, Size: 16}}}); err != nil {
		return s, fmt.Errorf("webgpu: surface: %w", err)
	}
	return s, nil
}

// lineVertices packs the lines' points with their colours (linear when the surface is sRGB, as
// the device encodes what it writes), and says where each line's vertices start.
func (s *Surface) lineVertices(lines []Line) (data []byte, first []uint32) {
	srgb := texFormat(s.format) == wgpu.TextureFormatRGBA8UnormSrgb
	for _, l := range lines {
		first = append(first, uint32(len(data)/24))
		c := [4]float32{float32(l.Color.R) / 255, float32(l.Color.G) / 255, float32(l.Color.B) / 255, float32(l.Color.A) / 255}
		if srgb {
			for i := range 3 {
				if c[i] <= 0.04045 {
					c[i] /= 12.92
				} else {
					c[i] = float32(math.Pow((float64(c[i])+0.055)/1.055, 2.4))
				}
			}
		}
		for i := 0; i+1 < len(l.Points); i += 2 {
			for _, v := range [6]float32{l.Points[i], l.Points[i+1], c[0], c[1], c[2], c[3]} {
				data = binary.LittleEndian.AppendUint32(data, math.Float32bits(v))
			}
		}
	}
	return data, first
}

// texFormat is the format of the texture the image is uploaded to for a surface format: RGBA
// (the image's byte order; the device writes a BGRA surface's channels where they go), sRGB
// when the surface is.
func texFormat(f wgpu.TextureFormat) wgpu.TextureFormat {
	switch f {
	case wgpu.TextureFormatBGRA8Unorm, wgpu.TextureFormatRGBA8Unorm:
		return wgpu.TextureFormatRGBA8Unorm
	case wgpu.TextureFormatBGRA8UnormSrgb, wgpu.TextureFormatRGBA8UnormSrgb:
		return wgpu.TextureFormatRGBA8UnormSrgb
	}
	return wgpu.TextureFormatUndefined
}

// resize configures the surface and the image's texture for a window of w×h pixels.
func (s *Surface) resize(w, h int) error {
	s.dropTexture()
	b := s.b
	s.surf.Configure(b.dev, &wgpu.SurfaceConfiguration{Usage: wgpu.TextureUsageRenderAttachment, Format: s.format,
		Width: uint32(w), Height: uint32(h), PresentMode: wgpu.PresentModeFifo, AlphaMode: s.alpha})
	var err error
	if s.tex, err = b.dev.TryCreateTexture(&wgpu.TextureDescriptor{Label: "lathe window image",
		Usage: wgpu.TextureUsageTextureBinding | wgpu.TextureUsageCopyDst, Dimension: wgpu.TextureDimension2D,
		Size: wgpu.Extent3D{Width: uint32(w), Height: uint32(h), DepthOrArrayLayers: 1}, Format: texFormat(s.format),
		MipLevelCount: 1, SampleCount: 1}); err != nil {
		return err
	}
	if s.texView, err = s.tex.TryCreateView(nil); err != nil {
		return err
	}
	if s.group, err = b.dev.TryCreateBindGroup(&wgpu.BindGroupDescriptor{Layout: s.pipe.GetBindGroupLayout(0),
		Entries: []wgpu.BindGroupEntry{{Binding: 0, TextureView: s.texView}}}); err != nil {
		return err
	}
	s.w, s.h = w, h
	return nil
}

// Present shows img, which has the window's size in pixels (a new size reconfigures the
// surface), with the lines drawn over it by the device. A window that cannot show a frame now
// (minimised, being resized) is not an error: the frame is dropped.
func (s *Surface) Present(img *image.RGBA, lines ...Line) (err error) {
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if s.released {
		return errors.New("webgpu: surface: released")
	}
	if err := b.check(); err != nil {
		return err
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("webgpu: present: %v", r)
		}
	}()
	w, h := img.Rect.Dx(), img.Rect.Dy()
	if w <= 0 || h <= 0 {
		return nil
	}
	if w != s.w || h != s.h {
		if err := s.resize(w, h); err != nil {
			return fmt.Errorf("webgpu: present: %w", err)
		}
	}
	if err := b.queue.TryWriteTexture(&wgpu.TexelCopyTextureInfo{Texture: s.tex, Aspect: wgpu.TextureAspectAll},
		img.Pix, &wgpu.TexelCopyBufferLayout{BytesPerRow: uint32(img.Stride), RowsPerImage: uint32(h)},
		&wgpu.Extent3D{Width: uint32(w), Height: uint32(h), DepthOrArrayLayers: 1}); err != nil {
		return fmt.Errorf("webgpu: present: %w", err)
	}
	verts, first := s.lineVertices(lines)
	if len(verts) > 0 {
		if err := s.writeLines(verts); err != nil {
			return fmt.Errorf("webgpu: present: %w", err)
		}
	}
	st, err := s.surf.TryGetCurrentTexture()
	if err != nil {
		return fmt.Errorf("webgpu: present: %w", err)
	}
	target, ok := st.Get()
	if !ok {
		if target != nil {
			target.Release()
		}
		if st.Status == wgpu.SurfaceGetCurrentTextureStatusOutdated || st.Status == wgpu.SurfaceGetCurrentTextureStatusLost {
			s.w, s.h = 0, 0 // reconfigure on the next frame
		}
		return nil
	}
	defer target.Release()
	view, err := target.TryCreateView(nil)
	if err != nil {
		return fmt.Errorf("webgpu: present: %w", err)
	}
	defer view.Release()
	enc, err := b.dev.TryCreateCommandEncoder(&wgpu.CommandEncoderDescriptor{Label: "lathe present"})
	if err != nil {
		return fmt.Errorf("webgpu: present: %w", err)
	}
	defer enc.Release()
	pass := enc.BeginRenderPass(&wgpu.RenderPassDescriptor{ColorAttachments: []wgpu.RenderPassColorAttachment{{
		View: view, LoadOp: wgpu.LoadOpClear, StoreOp: wgpu.StoreOpStore, ClearValue: wgpu.ColorBlack}}})
	pass.SetPipeline(s.pipe)
	pass.SetBindGroup(0, s.group, nil)
	pass.Draw(3, 1, 0, 0)
	if len(verts) > 0 {
		pass.SetPipeline(s.linePipe)
		pass.SetBindGroup(0, s.lineGroup, nil)
		pass.SetVertexBuffer(0, s.vertices, 0, uint64(len(verts)))
		for i, l := range lines {
			if n := uint32(len(l.Points) / 2); n > 0 {
				pass.Draw(n, 9, first[i], 0)
			}
		}
	}
	pass.End()
	pass.Release()
	cmd, err := enc.TryFinish(nil)
	if err != nil {
		return fmt.Errorf("webgpu: present: %w", err)
	}
	defer cmd.Release()
	b.queue.Submit(cmd)
	s.surf.Present()
	return nil
}

// writeLines uploads a frame's vertices and the window's size.
func (s *Surface) writeLines(verts []byte) error {
	if uint64(len(verts)) > s.vertCap {
		if s.vertices != nil {
			s.vertices.Release()
			s.vertices, s.vertCap = nil, 0
		}
		size := max(uint64(4096), uint64(1)<<bitsFor(uint64(len(verts))))
		buf, err := s.b.dev.TryCreateBuffer(&wgpu.BufferDescriptor{Label: "lathe lines",
			Usage: wgpu.BufferUsageVertex | wgpu.BufferUsageCopyDst, Size: size})
		if err != nil {
			return err
		}
		s.vertices, s.vertCap = buf, size
	}
	if err := s.b.queue.TryWriteBuffer(s.vertices, 0, verts); err != nil {
		return err
	}
	var size []byte
	for _, v := range [4]float32{float32(s.w), float32(s.h), 0, 0} {
		size = binary.LittleEndian.AppendUint32(size, math.Float32bits(v))
	}
	return s.b.queue.TryWriteBuffer(s.uniform, 0, size)
}

// bitsFor is the bits of the smallest power of two at least n.
func bitsFor(n uint64) int {
	b := 0
	for uint64(1)<<b < n {
		b++
	}
	return b
}

func (s *Surface) dropTexture() {
	if s.group != nil {
		s.group.Release()
		s.group = nil
	}
	if s.texView != nil {
		s.texView.Release()
		s.texView = nil
	}
	if s.tex != nil {
		s.tex.Release()
		s.tex = nil
	}
	s.w, s.h = 0, 0
}

func (s *Surface) release() {
	s.dropTexture()
	if s.lineGroup != nil {
		s.lineGroup.Release()
	}
	if s.uniform != nil {
		s.uniform.Release()
	}
	if s.vertices != nil {
		s.vertices.Release()
	}
	if s.linePipe != nil {
		s.linePipe.Release()
	}
	if s.pipe != nil {
		s.pipe.Release()
	}
	if s.module != nil {
		s.module.Release()
	}
	if s.surf != nil {
		s.surf.Release()
	}
	s.released = true
}

// Release frees the surface; call it before the window is destroyed and before the backend is
// closed.
func (s *Surface) Release() {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	if !s.released && !s.b.closed {
		s.release()
	}
}
