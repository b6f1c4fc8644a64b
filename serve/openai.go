//go:build !lathe_lite

package serve

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"

	"github.com/lathe-ml/lathe/model/tokenizer"
)

// The request bodies of /v1/completions and /v1/chat/completions, decoded and checked as OpenAI
// does, without the model: what the fuzz targets drive.

// Limits on the lists a request carries (the body is limited too).
const (
	maxMessages     = 1024 // chat messages
	maxContentParts = 256  // parts of one message's content
	maxPrompts      = 64   // prompts of one completion request
	maxN            = 8    // choices per prompt
)

// apiErr is an error answered the OpenAI way: a status, an error type and the parameter at
// fault.
type apiErr struct {
	status int
	typ    string
	param  string
	msg    string
}

func (e *apiErr) Error() string { return e.msg }

func badRequest(param, format string, args ...any) *apiErr {
	return &apiErr{status: http.StatusBadRequest, typ: "invalid_request_error", param: param, msg: fmt.Sprintf(format, args...)}
}

// commonRequest holds the fields completions and chat share.
type commonRequest struct {
	Model             string          `json:"model"`
	MaxTokens         *int            `json:"max_tokens"`
	MaxCompletion     *int            `json:"max_completion_tokens"`
	Temperature       *float64        `json:"temperature"`
	TopP              *float64        `json:"top_p"`
	TopK              *int            `json:"top_k"`
	Seed              *uint64         `json:"seed"`
	RepetitionPenalty *float64        `json:"repetition_penalty"`
	PresencePenalty   *float64        `json:"presence_penalty"`
	FrequencyPenalty  *float64        `json:"frequency_penalty"`
	Stop              json.RawMessage `json:"stop"`
	Stream            bool            `json:"stream"`
	StreamOptions     *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	N *int `json:"n"`
	// Logprobs is an int (0-5 alternatives) for completions, a bool for chat, which gives the
	// number of alternatives in TopLogprobs.
	Logprobs    json.RawMessage `json:"logprobs"`
	TopLogprobs *int            `json:"top_logprobs"`

	// Fields lathe does not implement: refused when they ask for anything but the default.
	Tools          json.RawMessage `json:"tools"`
	ToolChoice     json.RawMessage `json:"tool_choice"`
	Functions      json.RawMessage `json:"functions"`
	FunctionCall   json.RawMessage `json:"function_call"`
	ResponseFormat json.RawMessage `json:"response_format"`
	LogitBias      json.RawMessage `json:"logit_bias"`
	Suffix         json.RawMessage `json:"suffix"`
	BestOf         json.RawMessage `json:"best_of"`
	Echo           json.RawMessage `json:"echo"`
	Audio          json.RawMessage `json:"audio"`
	Prediction     json.RawMessage `json:"prediction"`
}

// isNull reports whether a raw JSON value is absent or null.
func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || string(t) == "null"
}

// is reports whether raw is the JSON value want.
func is(raw json.RawMessage, want any) bool {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return false
	}
	b, _ := json.Marshal(v)
	w, _ := json.Marshal(want)
	return bytes.Equal(b, w)
}

// unimplemented refuses the fields lathe does not implement, naming the first one set.
func (c *commonRequest) unimplemented(n int) *apiErr {
	for _, f := range []struct {
		name     string
		raw      json.RawMessage
		defaults []any // values that ask for nothing
	}{
		{"tools", c.Tools, []any{[]any{}}},
		{"tool_choice", c.ToolChoice, []any{"none"}},
		{"functions", c.Functions, []any{[]any{}}},
		{"function_call", c.FunctionCall, []any{"none"}},
		{"response_format", c.ResponseFormat, []any{map[string]any{"type": "text"}}},
		{"logit_bias", c.LogitBias, []any{map[string]any{}}},
		{"suffix", c.Suffix, []any{""}},
		{"best_of", c.BestOf, []any{1, n}}, // best_of = n returns every generation: plain n
		{"echo", c.Echo, []any{false}},
		{"audio", c.Audio, nil},
		{"prediction", c.Prediction, nil},
	} {
		if isNull(f.raw) {
			continue
		}
		ok := false
		for _, d := range f.defaults {
			ok = ok || is(f.raw, d)
		}
		if !ok {
			return badRequest(f.name, "%s is not supported by this server", f.name)
		}
	}
	return nil
}

// choices is n, checked.
func (c *commonRequest) choices() (int, *apiErr) {
	if c.N == nil {
		return 1, nil
	}
	if *c.N < 1 || *c.N > maxN {
		return 0, badRequest("n", "n must be in [1, %d]", maxN)
	}
	return *c.N, nil
}

// sampling returns the request's sampling parameters, checked as OpenAI checks them.
func (c *commonRequest) sampling(chat bool) (Sampling, *apiErr) {
	sp := DefaultSampling()
	sp.Temperature = 1 // OpenAI's default
	if c.MaxTokens != nil {
		sp.MaxTokens = *c.MaxTokens
	}
	if c.MaxCompletion != nil {
		sp.MaxTokens = *c.MaxCompletion
	}
	if c.Temperature != nil {
		if t := *c.Temperature; !(t >= 0 && t <= 2) {
			return sp, badRequest("temperature", "temperature %v is not in [0, 2]", t)
		}
		sp.Temperature = *c.Temperature
	}
	if c.TopP != nil {
		if p := *c.TopP; !(p > 0 && p <= 1) {
			return sp, badRequest("top_p", "top_p %v is not in (0, 1]", p)
		}
		sp.TopP = *c.TopP
	}
	if c.TopK != nil {
		sp.TopK = *c.TopK
	}
	if c.Seed != nil {
		sp.Seed = *c.Seed
	}
	if c.RepetitionPenalty != nil {
		sp.RepetitionPenalty = *c.RepetitionPenalty
	}
	if c.PresencePenalty != nil {
		sp.PresencePenalty = *c.PresencePenalty
	}
	if c.FrequencyPenalty != nil {
		sp.FrequencyPenalty = *c.FrequencyPenalty
	}
	if !isNull(c.Stop) {
		var one string
		if err := json.Unmarshal(c.Stop, &one); err == nil {
			sp.Stop = []string{one}
		} else if err := json.Unmarshal(c.Stop, &sp.Stop); err != nil {
			return sp, badRequest("stop", "stop must be a string or an array of strings")
		}
	}
	if !isNull(c.Logprobs) {
		if chat {
			if err := json.Unmarshal(c.Logprobs, &sp.Logprobs); err != nil {
				return sp, badRequest("logprobs", "logprobs must be a boolean")
			}
			if c.TopLogprobs != nil {
				if !sp.Logprobs {
					return sp, badRequest("top_logprobs", "top_logprobs needs logprobs: true")
				}
				sp.TopLogprobs = *c.TopLogprobs
			}
		} else {
			if err := json.Unmarshal(c.Logprobs, &sp.TopLogprobs); err != nil || sp.TopLogprobs < 0 || sp.TopLogprobs > 5 {
				return sp, badRequest("logprobs", "logprobs must be an integer in [0, 5]")
			}
			sp.Logprobs = true
		}
	} else if c.TopLogprobs != nil {
		return sp, badRequest("top_logprobs", "top_logprobs needs logprobs: true")
	}
	if err := sp.Validate(); err != nil {
		param, _, _ := strings.Cut(err.Error(), " ")
		return sp, badRequest(param, "%s", err.Error())
	}
	return sp, nil
}

// completionRequest is a /v1/completions body.
type completionRequest struct {
	commonRequest
	Prompt json.RawMessage `json:"prompt"`
}

// prompt is one prompt of a completion request: text, or token ids.
type prompt struct {
	text string
	ids  []int32
}

// prompts decodes OpenAI's four forms of prompt: a string, an array of strings (one choice per
// prompt), an array of token ids, or an array of arrays of token ids. No prompt is the empty one.
func (c *completionRequest) prompts() ([]prompt, *apiErr) {
	if isNull(c.Prompt) {
		return []prompt{{}}, nil
	}
	var text string
	if json.Unmarshal(c.Prompt, &text) == nil {
		return []prompt{{text: text}}, nil
	}
	var texts []string
	var ids []int32
	var idLists [][]int32
	var out []prompt
	switch {
	case json.Unmarshal(c.Prompt, &texts) == nil:
		for _, t := range texts {
			out = append(out, prompt{text: t})
		}
	case json.Unmarshal(c.Prompt, &ids) == nil:
		if len(ids) == 0 {
			return nil, badRequest("prompt", "prompt must not be empty")
		}
		out = []prompt{{ids: ids}}
	case json.Unmarshal(c.Prompt, &idLists) == nil:
		for _, l := range idLists {
			if len(l) == 0 {
				return nil, badRequest("prompt", "a prompt of token ids must not be empty")
			}
			out = append(out, prompt{ids: l})
		}
	default:
		return nil, badRequest("prompt", "prompt must be a string, an array of strings, an array of token ids or an array of arrays of token ids")
	}
	switch {
	case len(out) == 0:
		return nil, badRequest("prompt", "prompt must not be empty")
	case len(out) > maxPrompts:
		return nil, badRequest("prompt", "%d prompts, at most %d", len(out), maxPrompts)
	}
	for _, p := range out {
		for _, id := range p.ids {
			if id < 0 {
				return nil, badRequest("prompt", "token id %d is negative", id)
			}
		}
	}
	return out, nil
}

// chatRequest is a /v1/chat/completions body.
type chatRequest struct {
	commonRequest
	Messages []chatMessage `json:"messages"`
}

type chatMessage struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content"`
	Name       string          `json:"name"`
	ToolCalls  json.RawMessage `json:"tool_calls"`
	ToolCallID json.RawMessage `json:"tool_call_id"`
}

// messages turns the chat messages into the template's: content parts joined (text parts only,
// with newlines, as vLLM joins them), the developer role taken as system.
func (c *chatRequest) messages() ([]tokenizer.Message, *apiErr) {
	switch {
	case len(c.Messages) == 0:
		return nil, badRequest("messages", "messages must not be empty")
	case len(c.Messages) > maxMessages:
		return nil, badRequest("messages", "%d messages, at most %d", len(c.Messages), maxMessages)
	}
	out := make([]tokenizer.Message, len(c.Messages))
	for i, m := range c.Messages {
		param := fmt.Sprintf("messages[%d]", i)
		role := m.Role
		switch role {
		case "developer":
			role = "system"
		case "system", "user", "assistant":
		case "tool", "function":
			return nil, badRequest(param+".role", "role %q is not supported: this server has no tools", m.Role)
		default:
			return nil, badRequest(param+".role", "unknown role %q (want system, developer, user or assistant)", m.Role)
		}
		if !isNull(m.ToolCalls) {
			return nil, badRequest(param+".tool_calls", "tool_calls is not supported by this server")
		}
		content, err := messageContent(m.Content, param+".content")
		if err != nil {
			return nil, err
		}
		out[i] = tokenizer.Message{Role: role, Content: content}
	}
	return out, nil
}

// messageContent is a message's text: a string, or an array of text parts.
func messageContent(raw json.RawMessage, param string) (string, *apiErr) {
	if isNull(raw) {
		return "", badRequest(param, "%s is required", param)
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var parts []struct {
		Type string  `json:"type"`
		Text *string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", badRequest(param, "%s must be a string or an array of content parts", param)
	}
	if len(parts) > maxContentParts {
		return "", badRequest(param, "%d content parts, at most %d", len(parts), maxContentParts)
	}
	texts := make([]string, len(parts))
	for k, p := range parts {
		switch {
		case p.Type != "text":
			return "", badRequest(fmt.Sprintf("%s[%d].type", param, k), "content part type %q is not supported (only \"text\")", p.Type)
		case p.Text == nil:
			return "", badRequest(fmt.Sprintf("%s[%d].text", param, k), "a text part needs text")
		}
		texts[k] = *p.Text
	}
	return strings.Join(texts, "\n"), nil
}

// decodeBody decodes a JSON request body into v: one object, nothing after it.
func decodeBody(body []byte, v any) *apiErr {
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return badRequest("", "malformed JSON: %v", err)
	}
	if dec.More() {
		return badRequest("", "malformed JSON: data after the object")
	}
	return nil
}

// parsedRequest is a checked generation request, the model still to be looked up.
type parsedRequest struct {
	common   commonRequest
	sampling Sampling
	n        int
	prompts  []prompt            // completions
	messages []tokenizer.Message // chat
}

// checkCommon checks what chat and completions share, in the order OpenAI reports errors.
func checkCommon(c *commonRequest, chat bool) (parsedRequest, *apiErr) {
	p := parsedRequest{common: *c}
	var err *apiErr
	if p.n, err = c.choices(); err != nil {
		return p, err
	}
	if err := c.unimplemented(p.n); err != nil {
		return p, err
	}
	if p.sampling, err = c.sampling(chat); err != nil {
		return p, err
	}
	if math.IsNaN(p.sampling.Temperature) {
		return p, badRequest("temperature", "temperature is not a number")
	}
	return p, nil
}

// parseCompletion decodes and checks a /v1/completions body; the model is the caller's to look
// up (first: an unknown model is a 404 whatever else is wrong).
func parseCompletion(body []byte) (string, func() (parsedRequest, *apiErr), *apiErr) {
	var req completionRequest
	if err := decodeBody(body, &req); err != nil {
		return "", nil, err
	}
	return req.Model, func() (parsedRequest, *apiErr) {
		p, err := checkCommon(&req.commonRequest, false)
		if err != nil {
			return p, err
		}
		if p.prompts, err = req.prompts(); err != nil {
			return p, err
		}
		if len(p.prompts)*p.n > maxPrompts {
			return p, badRequest("n", "%d prompts × n = %d generations, at most %d", len(p.prompts), len(p.prompts)*p.n, maxPrompts)
		}
		return p, nil
	}, nil
}

// parseChat decodes and checks a /v1/chat/completions body, as parseCompletion does.
func parseChat(body []byte) (string, func() (parsedRequest, *apiErr), *apiErr) {
	var req chatRequest
	if err := decodeBody(body, &req); err != nil {
		return "", nil, err
	}
	return req.Model, func() (parsedRequest, *apiErr) {
		p, err := checkCommon(&req.commonRequest, true)
		if err != nil {
			return p, err
		}
		p.messages, err = req.messages()
		return p, err
	}, nil
}
