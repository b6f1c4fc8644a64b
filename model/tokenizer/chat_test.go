package tokenizer

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// The chat templates below are the public ones from the models' tokenizer_config.json files.
const (
	llama2ChatTemplate = `{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}`

	zephyrTemplate = "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"

	qwen2Template = `{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system
You are a helpful assistant.<|im_end|>
' }}{% endif %}{{'<|im_start|>' + message['role'] + '
' + message['content'] + '<|im_end|>' + '
'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant
' }}{% endif %}`

	smollmTemplate = `{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}`

	mistralTemplate = `{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}`

	llama3Template = `{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}`
)

// chatTokenizer builds a tiny tokenizer whose config carries the given template and specials.
func chatTokenizer(t *testing.T, tmpl, bos, eos string) *Tokenizer {
	t.Helper()
	vocab := map[string]int{"<unk>": 0, bos: 1, eos: 2, "a": 3}
	tok := map[string]any{
		"added_tokens": []map[string]any{
			{"id": 1, "content": bos, "special": true},
			{"id": 2, "content": eos, "special": true},
		},
		"model": map[string]any{"type": "BPE", "vocab": vocab, "merges": []string{}, "unk_token": "<unk>"},
	}
	cfg := map[string]any{"bos_token": bos, "eos_token": eos, "chat_template": tmpl}
	tj, err := json.Marshal(tok)
	require.NoError(t, err)
	cj, err := json.Marshal(cfg)
	require.NoError(t, err)
	tk, err := FromJSON(tj, cj)
	require.NoError(t, err)
	return tk
}

func TestChatTemplateLlama2(t *testing.T) {
	tk := chatTokenizer(t, llama2ChatTemplate, "<s>", "</s>")
	out, err := tk.ApplyChatTemplate([]Message{
		{"system", "You are helpful."},
		{"user", "Hi"},
		{"assistant", "Hello!"},
		{"user", " How are you? "},
	}, false)
	require.NoError(t, err)
	require.Equal(t, "<s>[INST] <<SYS>>\nYou are helpful.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] How are you? [/INST]", out)

	out, err = tk.ApplyChatTemplate([]Message{{"user", "Hi"}}, true)
	require.NoError(t, err)
	require.Equal(t, "<s>[INST] Hi [/INST]", out)

	_, err = tk.ApplyChatTemplate([]Message{{"user", "Hi"}, {"user", "again"}}, false)
	require.ErrorContains(t, err, "Conversation roles must alternate")
}

func TestChatTemplateMistral(t *testing.T) {
	tk := chatTokenizer(t, mistralTemplate, "<s>", "</s>")
	out, err := tk.ApplyChatTemplate([]Message{{"user", "Hi"}, {"assistant", "Hello"}, {"user", "Again"}}, true)
	require.NoError(t, err)
	require.Equal(t, "<s>[INST] Hi [/INST]Hello</s>[INST] Again [/INST]", out)
	_, err = tk.ApplyChatTemplate([]Message{{"user", "Hi"}, {"tool", "x"}}, false)
	require.ErrorContains(t, err, "Only user and assistant roles are supported!")
}

func TestChatTemplateZephyr(t *testing.T) {
	tk := chatTokenizer(t, zephyrTemplate, "<s>", "</s>")
	out, err := tk.ApplyChatTemplate([]Message{
		{"system", "You are a friendly chatbot."},
		{"user", "Hi"},
	}, true)
	require.NoError(t, err)
	require.Equal(t, "<|system|>\nYou are a friendly chatbot.</s>\n<|user|>\nHi</s>\n<|assistant|>\n", out)

	out, err = tk.ApplyChatTemplate([]Message{{"user", "Hi"}, {"assistant", "Hello"}}, false)
	require.NoError(t, err)
	require.Equal(t, "<|user|>\nHi</s>\n<|assistant|>\nHello</s>\n", out)
}

func TestChatTemplateChatML(t *testing.T) {
	tk := chatTokenizer(t, qwen2Template, "<|im_start|>", "<|im_end|>")
	out, err := tk.ApplyChatTemplate([]Message{{"user", "Hi"}}, true)
	require.NoError(t, err)
	require.Equal(t, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", out)

	out, err = tk.ApplyChatTemplate([]Message{{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Yo"}}, false)
	require.NoError(t, err)
	require.Equal(t, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>\n", out)

	tk = chatTokenizer(t, smollmTemplate, "<|im_start|>", "<|im_end|>")
	out, err = tk.ApplyChatTemplate([]Message{{"user", "Hi"}}, true)
	require.NoError(t, err)
	require.Equal(t, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", out)
}

func TestChatTemplateLlama3(t *testing.T) {
	tk := chatTokenizer(t, llama3Template, "<|begin_of_text|>", "<|eot_id|>")
	out, err := tk.ApplyChatTemplate([]Message{{"system", "Be nice."}, {"user", " Hi\n"}}, true)
	require.NoError(t, err)
	require.Equal(t, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe nice.<|eot_id|>"+
		"<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", out)
}

func TestChatTemplateMissingAndList(t *testing.T) {
	tk := chatTokenizer(t, "", "<s>", "</s>")
	tk.chatTemplates = nil
	_, err := tk.ApplyChatTemplate([]Message{{"user", "Hi"}}, false)
	require.ErrorContains(t, err, "no chat template")
	require.False(t, tk.HasChatTemplate())

	require.NoError(t, tk.SetChatTemplate(smollmTemplate))
	out, err := tk.ApplyChatTemplate([]Message{{"user", "Hi"}}, false)
	require.NoError(t, err)
	require.Equal(t, "<|im_start|>user\nHi<|im_end|>\n", out)
	require.Error(t, tk.SetChatTemplate("{% for %}"))

	// The list form picks "default".
	require.NoError(t, tk.parseChatTemplates(json.RawMessage(`[{"name":"tool_use","template":"T"},{"name":"default","template":"D{{ bos_token }}"}]`)))
	tk.chatCompiled = nil
	out, err = tk.ApplyChatTemplate(nil, false)
	require.NoError(t, err)
	require.Equal(t, "D<s>", out)
}
