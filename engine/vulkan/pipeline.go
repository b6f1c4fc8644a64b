package vulkan

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/gogpu/naga"
	vk "github.com/goki/vulkan"

	"github.com/lathe-ml/lathe/shaders"
)

// pipeline is a compiled kernel: its module, descriptor set layout, layout and pipeline.
type pipeline struct {
	module vk.ShaderModule
	dsl    vk.DescriptorSetLayout
	layout vk.PipelineLayout
	pipe   vk.Pipeline
}

func (p *pipeline) destroy(dev vk.Device) {
	vk.DestroyPipeline(dev, p.pipe, nil)
	vk.DestroyPipelineLayout(dev, p.layout, nil)
	vk.DestroyDescriptorSetLayout(dev, p.dsl, nil)
	vk.DestroyShaderModule(dev, p.module, nil)
}

// SPIRV composes a kernel's WGSL (shaders.ComposeVariant, as WebGPU compiles it) and translates
// it to SPIR-V 1.3 with naga: the one source of every kernel for both GPU backends.
func SPIRV(name string, consts []shaders.Const, subgroups bool) ([]uint32, error) {
	src, err := shaders.ComposeVariant(name, consts, subgroups)
	if err != nil {
		return nil, err
	}
	code, err := naga.Compile(src)
	if err != nil {
		return nil, fmt.Errorf("translate kernel %s to SPIR-V: %w", name, err)
	}
	if len(code)%4 != 0 || len(code) < 20 || binary.LittleEndian.Uint32(code) != 0x07230203 {
		return nil, fmt.Errorf("translate kernel %s: naga gave %d bytes that are not SPIR-V", name, len(code))
	}
	words := make([]uint32, len(code)/4)
	for i := range words {
		words[i] = binary.LittleEndian.Uint32(code[4*i:])
	}
	return words, nil
}

// getPipeline compiles (once) a kernel with its constants for nStorage storage buffers (bindings
// 0..n-1) and, with uniform, a uniform block at binding n.
func (b *Backend) getPipeline(name string, consts []shaders.Const, sg bool, nStorage int, uniform bool) (*pipeline, error) {
	var kb strings.Builder
	kb.WriteString(name)
	for _, c := range consts {
		kb.WriteString("|" + c.Name + "=" + c.Value)
	}
	fmt.Fprintf(&kb, "|%d|%v|%v", nStorage, uniform, sg)
	key := kb.String()
	if p := b.pipes[key]; p != nil {
		return p, nil
	}
	code, err := SPIRV(name, consts, sg)
	if err != nil {
		return nil, err
	}
	return b.newPipeline(key, name, code, nil, nStorage, uniform)
}

// getGLSLPipeline creates (once) the pipeline of a GLSL-tier module with its specialisation
// constants, with getPipeline's bindings.
func (b *Backend) getGLSLPipeline(c glslChoice, nStorage int, uniform bool) (*pipeline, error) {
	key := fmt.Sprintf("%s|%d|%v", c.key(), nStorage, uniform)
	if p := b.pipes[key]; p != nil {
		return p, nil
	}
	code, err := shaders.SPIRV(c.module)
	if err != nil {
		return nil, err
	}
	return b.newPipeline(key, c.module, code, &c, nStorage, uniform)
}

// newPipeline creates and caches under key the pipeline of a SPIR-V module; spec, when set, gives
// its specialisation constants.
func (b *Backend) newPipeline(key, name string, code []uint32, spec *glslChoice, nStorage int, uniform bool) (*pipeline, error) {
	if b.compiled != nil {
		b.compiled(name, code)
	}
	p := &pipeline{}
	var mod vk.ShaderModule
	if err := vkErr("create shader module "+name, vk.CreateShaderModule(b.dev, &vk.ShaderModuleCreateInfo{SType: vk.StructureTypeShaderModuleCreateInfo,
		CodeSize: uint64(4 * len(code)), PCode: code}, nil, &mod)); err != nil {
		return nil, fmt.Errorf("the driver rejects kernel %s: %w", name, err)
	}
	p.module = mod
	var binds []vk.DescriptorSetLayoutBinding
	for i := 0; i < nStorage; i++ {
		binds = append(binds, vk.DescriptorSetLayoutBinding{Binding: uint32(i), DescriptorType: vk.DescriptorTypeStorageBuffer, DescriptorCount: 1, StageFlags: vk.ShaderStageFlags(vk.ShaderStageComputeBit)})
	}
	if uniform {
		binds = append(binds, vk.DescriptorSetLayoutBinding{Binding: uint32(nStorage), DescriptorType: vk.DescriptorTypeUniformBuffer, DescriptorCount: 1, StageFlags: vk.ShaderStageFlags(vk.ShaderStageComputeBit)})
	}
	var dsl vk.DescriptorSetLayout
	if err := vkErr("create descriptor set layout "+name, vk.CreateDescriptorSetLayout(b.dev, &vk.DescriptorSetLayoutCreateInfo{SType: vk.StructureTypeDescriptorSetLayoutCreateInfo,
		BindingCount: uint32(len(binds)), PBindings: binds}, nil, &dsl)); err != nil {
		vk.DestroyShaderModule(b.dev, mod, nil)
		return nil, err
	}
	p.dsl = dsl
	var layout vk.PipelineLayout
	if err := vkErr("create pipeline layout "+name, vk.CreatePipelineLayout(b.dev, &vk.PipelineLayoutCreateInfo{SType: vk.StructureTypePipelineLayoutCreateInfo,
		SetLayoutCount: 1, PSetLayouts: []vk.DescriptorSetLayout{dsl}}, nil, &layout)); err != nil {
		vk.DestroyDescriptorSetLayout(b.dev, dsl, nil)
		vk.DestroyShaderModule(b.dev, mod, nil)
		return nil, err
	}
	p.layout = layout
	var ids, vals []uint32
	if spec != nil {
		ids, vals = spec.specIDs(), spec.specValues()
	}
	pipe, r := b.calls.createComputePipeline(mod, layout, ids, vals)
	if err := vkErr("create compute pipeline "+name, r); err != nil {
		vk.DestroyPipelineLayout(b.dev, layout, nil)
		vk.DestroyDescriptorSetLayout(b.dev, dsl, nil)
		vk.DestroyShaderModule(b.dev, mod, nil)
		return nil, fmt.Errorf("the driver rejects kernel %s: %w", name, err)
	}
	p.pipe = pipe
	b.pipes[key] = p
	return p, nil
}
