//go:build !unix

package webgpu

// quietNative runs f (the native libraries' stderr is left as it is off Unix).
func quietNative(f func()) { f() }
