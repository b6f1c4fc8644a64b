package webgpu

/*
#include <stdlib.h>

// lathe_prime_chunks leaves the allocator's cache of chunks of n bytes zeroed past their first 16
// bytes (free writes only there). See primeChunks.
static void lathe_prime_chunks(size_t n) {
	void *p[16];
	for (int i = 0; i < 16; i++) p[i] = calloc(1, n);
	for (int i = 15; i >= 0; i--) free(p[i]);
}
*/
import "C"

// primeChunks works around cogentcore/webgpu v0.23.0's RequestDevice, which mallocs a
// WGPURequiredLimitsExtras and sets only maxPushConstantSize, leaving maxNonSamplerBindings (bytes
// 16..23 of the 24-byte struct) as whatever the allocator hands back; garbage there above the
// adapter's limit fails the request at random. With glibc, recycled chunks of that size keep the
// zeros this leaves (and requestDevice falls back to default limits should it not work). Call it on
// the OS thread (runtime.LockOSThread) that then makes the binding's call.
func primeChunks(n int) { C.lathe_prime_chunks(C.size_t(n)) }
