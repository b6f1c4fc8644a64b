//go:build amd64 && !purego

#include "textflag.h"

// func widenF16x8(n8 int, src *uint16, dst *float32)
// dst[0:8·n8] = the IEEE halves src[0:8·n8] as float32 (VCVTPH2PS: exact, subnormals included).
TEXT ·widenF16x8(SB), NOSPLIT, $0-24
	MOVQ n8+0(FP), CX
	MOVQ src+8(FP), SI
	MOVQ dst+16(FP), DI
	TESTQ CX, CX
	JZ    done

loop:
	VCVTPH2PS (SI), Y0
	VMOVUPS   Y0, (DI)
	ADDQ      $16, SI
	ADDQ      $32, DI
	DECQ      CX
	JNZ       loop

done:
	VZEROUPPER
	RET

// func widenBF16x8(n8 int, src *uint16, dst *float32)
// dst[0:8·n8] = the bfloat16s src[0:8·n8] as float32: each zero-extended and shifted into the high
// half of its word.
TEXT ·widenBF16x8(SB), NOSPLIT, $0-24
	MOVQ n8+0(FP), CX
	MOVQ src+8(FP), SI
	MOVQ dst+16(FP), DI
	TESTQ CX, CX
	JZ    done

loop:
	VPMOVZXWD (SI), Y0
	VPSLLD    $16, Y0, Y0
	VMOVUPS   Y0, (DI)
	ADDQ      $16, SI
	ADDQ      $32, DI
	DECQ      CX
	JNZ       loop

done:
	VZEROUPPER
	RET
