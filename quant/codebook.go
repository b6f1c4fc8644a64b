package quant

// NF4Code holds the 16 NormalFloat4 values of bitsandbytes (functional.get_4bit_type("nf4")),
// indexed by the 4-bit code. They are quantiles of N(0,1) scaled to [-1, 1], with an exact zero.
var NF4Code = [16]float32{
	-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
	-0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
	0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
	0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
}

// FP4Code holds the 16 FP4 (e2m1, bias 3) values of bitsandbytes, indexed by the 4-bit code and
// normalised by their largest magnitude, 12: bit 3 is the sign, codes 0b000..0b111 are
// 0, 0.0625, 8, 12, 4, 6, 2, 3 (before the division).
var FP4Code = [16]float32{
	0, 0.0625 / 12, 8.0 / 12, 12.0 / 12, 4.0 / 12, 6.0 / 12, 2.0 / 12, 3.0 / 12,
	-0.0, -0.0625 / 12, -8.0 / 12, -12.0 / 12, -4.0 / 12, -6.0 / 12, -2.0 / 12, -3.0 / 12,
}
