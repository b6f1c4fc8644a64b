package tokenizer

import "fmt"

// TokenBytes returns the raw bytes token id stands for, before they are read as UTF-8 (what
// OpenAI's logprobs call a token's bytes): a byte-fallback token (<0xNN>) is its one byte and a
// byte-level (GPT-2) token the bytes its characters map to, either of which may be part of a
// character; any other token is its decoded text.
func (t *Tokenizer) TokenBytes(id int) ([]byte, error) {
	tok, ok := t.IDToToken(id)
	if !ok {
		return nil, fmt.Errorf("token id %d is not in the vocabulary (size %d)", id, len(t.idToToken))
	}
	if !t.IsSpecial(id) {
		if b, ok := parseByteToken(tok); ok && hasDecoder[byteFallbackDecoder](t.dec) {
			return []byte{b}, nil
		}
		if hasDecoder[byteLevelDecoder](t.dec) {
			return byteLevelDecodeToken(nil, tok), nil
		}
	}
	s, err := t.Decode([]int{id}, false)
	return []byte(s), err
}

// hasDecoder reports whether d is, or its sequence holds, a decoder of type D.
func hasDecoder[D decoder](d decoder) bool {
	if q, ok := d.(seqDecoder); ok {
		for _, x := range q {
			if hasDecoder[D](x) {
				return true
			}
		}
		return false
	}
	_, ok := d.(D)
	return ok
}
