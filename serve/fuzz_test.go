package serve

import "testing"

// The request decoders take any bytes a client sends: they never panic, and what they accept is
// within the limits and ranges the server promises the generator.

func checkParsed(t *testing.T, p parsedRequest, chat bool) {
	if err := p.sampling.Validate(); err != nil {
		t.Fatalf("accepted sampling that does not validate: %v", err)
	}
	if sp := p.sampling; !(sp.Temperature >= 0 && sp.Temperature <= 2) || !(sp.TopP > 0 && sp.TopP <= 1) {
		t.Fatalf("accepted temperature %v, top_p %v", sp.Temperature, sp.TopP)
	}
	if p.n < 1 || p.n > maxN {
		t.Fatalf("accepted n = %d", p.n)
	}
	if err := p.common.unimplemented(p.n); err != nil {
		t.Fatalf("accepted an unimplemented field: %v", err)
	}
	if chat {
		if len(p.messages) == 0 || len(p.messages) > maxMessages {
			t.Fatalf("accepted %d messages", len(p.messages))
		}
		for _, m := range p.messages {
			if m.Role != "system" && m.Role != "user" && m.Role != "assistant" {
				t.Fatalf("accepted role %q", m.Role)
			}
		}
		return
	}
	if len(p.prompts) == 0 || len(p.prompts)*p.n > maxPrompts {
		t.Fatalf("accepted %d prompts × n %d", len(p.prompts), p.n)
	}
	for _, pr := range p.prompts {
		for _, id := range pr.ids {
			if id < 0 {
				t.Fatalf("accepted token id %d", id)
			}
		}
		if pr.ids != nil && len(pr.ids) == 0 {
			t.Fatalf("accepted an empty list of token ids")
		}
	}
}

// fuzzDecoder fuzzes one decoder from its seed corpus in testdata/fuzz.
func fuzzDecoder(f *testing.F, chat bool) {
	parse := parseCompletion
	if chat {
		parse = parseChat
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		_, check, err := parse(body)
		if err != nil {
			if err.status != 400 || err.msg == "" {
				t.Fatalf("a decode error is a 400 with a message: %+v", err)
			}
			return
		}
		p, err := check()
		if err != nil {
			if err.status != 400 || err.msg == "" {
				t.Fatalf("a check error is a 400 with a message: %+v", err)
			}
			return
		}
		checkParsed(t, p, chat)
	})
}

// FuzzChatRequest fuzzes the /v1/chat/completions body decoder.
func FuzzChatRequest(f *testing.F) { fuzzDecoder(f, true) }

// FuzzCompletionRequest fuzzes the /v1/completions body decoder.
func FuzzCompletionRequest(f *testing.F) { fuzzDecoder(f, false) }
