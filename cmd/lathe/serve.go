//go:build !lathe_lite

package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/peft"
	"github.com/lathe-ml/lathe/serve"
)

func newServeCmd() *cobra.Command {
	var (
		dir, name, host, apiKey, device, quantize, merge, head, compute string
		adapterDir, chatTemplate                                        string
		port, maxConcurrent, maxWaiting, contextLen                     int
		maxAdapters, maxConns                                           int
		maxAdapterBytes                                                 int64
		readTimeout, idleTimeout, writeTimeout                          time.Duration
		tokenTimeout                                                    time.Duration
		adapters, allowedHosts, corsOrigins                             []string
	)
	cmd := &cobra.Command{
		Use:   "serve --model DIR [--adapter NAME=DIR ...] [--adapter-dir DIR] [--merge DIR] [--host 127.0.0.1] [--port 8080] [--api-key KEY]",
		Short: "Serve a model and its adapters over an OpenAI-compatible HTTP API",
		Long: "Serves /v1/models, /v1/completions and /v1/chat/completions (stream: true for server-sent events), " +
			"batching concurrent requests into shared decode steps, each with its own adapter, " +
			"and /v1/adapters to load (POST {\"name\",\"path\"}, path a folder under --adapter-dir) and unload (DELETE /v1/adapters/NAME) adapters. " +
			"A request's model field is NAME for the base model or NAME:ADAPTER.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return fmt.Errorf("serve: --model is required")
			}
			if merge != "" && head != model.HeadAuto && head != model.HeadBase {
				return fmt.Errorf("serve: --merge changes the loaded weights after --head %s copied the output projection; leave --head out", head)
			}
			m, tok, done, err := openModel(device, dir, quantize, head, compute)
			if err != nil {
				return err
			}
			defer done()
			if chatTemplate != "" {
				src, err := os.ReadFile(chatTemplate)
				if err != nil {
					return fmt.Errorf("serve: --chat-template: %w", err)
				}
				if err := tok.SetChatTemplate(string(src)); err != nil {
					return fmt.Errorf("serve: --chat-template %s: %w", chatTemplate, err)
				}
			}
			if adapterDir != "" {
				if info, err := os.Stat(adapterDir); err != nil || !info.IsDir() {
					return fmt.Errorf("serve: --adapter-dir %s is not a folder", adapterDir)
				}
			}
			b := m.Backend
			if merge != "" {
				// A single-adapter deployment: the adapter folded into the weights costs nothing
				// a token.
				a, err := peft.Load(merge, m.Cfg, b)
				if err != nil {
					return err
				}
				err = peft.Merge(m, a)
				a.Release()
				if err != nil {
					return fmt.Errorf("serve: --merge: %w", err)
				}
			}
			if name == "" {
				name = filepath.Base(filepath.Clean(dir))
			}
			reg := serve.NewRegistry(servedAdapterLoader(m))
			reg.Combine = combineAdapters
			reg.MaxAdapters, reg.MaxBytes = maxAdapters, maxAdapterBytes
			for _, a := range adapters {
				an, ad, ok := strings.Cut(a, "=")
				if !ok {
					return fmt.Errorf("serve: --adapter %q: want NAME=DIR", a)
				}
				if err := reg.Load(an, ad); err != nil {
					return err
				}
			}
			gen := &serve.Generator{Model: m, Tok: tok, Slots: maxConcurrent, Context: contextLen}
			defer gen.Close()
			srv := &serve.Server{Name: name, Gen: gen, Adapters: reg, APIKey: apiKey, MaxConcurrent: maxConcurrent, MaxWaiting: maxWaiting,
				AdapterDir: adapterDir, Host: boundHost(host), AllowedHosts: allowedHosts, CORSOrigins: corsOrigins,
				WriteTimeout: writeTimeout, TokenTimeout: tokenTimeout}
			ln, err := net.Listen("tcp", net.JoinHostPort(host, fmt.Sprint(port)))
			if err != nil {
				return fmt.Errorf("serve: %w", err)
			}
			hs := srv.HTTPServer(serve.Timeouts{Read: readTimeout, Idle: idleTimeout})
			hs.ErrorLog = log.New(os.Stderr, "serve: ", 0)
			if apiKey == "" && !loopback(host) {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: serving on %s, beyond this machine, without --api-key: anyone who reaches the port can use the model and load adapters\n", host)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			go func() {
				<-ctx.Done()
				sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_ = hs.Shutdown(sctx)
			}()
			ctxLen := gen.Limit()
			kvBytes := int64(m.Cfg.NumLayers) * 2 * int64(m.Cfg.NumKVHeads*m.Cfg.HeadDim) * 4 * int64(gen.Slots*ctxLen)
			served := []string{name}
			if merge != "" {
				served[0] += " (merged: " + merge + ")"
			}
			for _, a := range reg.Names() {
				served = append(served, name+":"+a)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "serving %s on http://%s (device %s:%s; %d requests at once, %d tokens each: a %s KV cache)\n",
				strings.Join(served, ", "), ln.Addr(), b.Device().Backend, b.Device().Name, gen.Slots, ctxLen, byteSize(kvBytes))
			if err := hs.Serve(serve.LimitListener(ln, maxConns)); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve: %w", err)
			}
			return printJSON(cmd.OutOrStdout(), map[string]any{"served": name, "address": ln.Addr().String()})
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "model", "", "model folder")
	f.StringVar(&name, "name", "", "the model's name in requests (default: the folder's name)")
	f.StringArrayVar(&adapters, "adapter", nil, "NAME=DIR: serve an adapter (repeatable; never evicted)")
	f.StringVar(&adapterDir, "adapter-dir", "", "folder whose adapter folders POST /v1/adapters may load, by relative name (default: loading over HTTP is off)")
	f.IntVar(&maxAdapters, "max-adapters", 64, "most adapters loaded at once; loading more evicts the least recently used idle one (0: no cap)")
	f.Int64Var(&maxAdapterBytes, "max-adapter-bytes", 4<<30, "most bytes of adapter files loaded at once, evicting as --max-adapters does (0: no cap)")
	f.StringVar(&chatTemplate, "chat-template", "", "Jinja chat template file for /v1/chat/completions (for models whose tokenizer_config.json has none)")
	f.StringArrayVar(&allowedHosts, "allowed-host", nil, "a host name requests may address the server by besides --host (repeatable; * for any): others are refused, against DNS rebinding")
	f.StringArrayVar(&corsOrigins, "cors-origin", nil, "a web origin (https://app.example) whose pages may call the API (repeatable; * for any); default: no cross-origin use")
	f.DurationVar(&readTimeout, "read-timeout", 30*time.Second, "most time to read a request, body included")
	f.DurationVar(&writeTimeout, "write-timeout", 30*time.Second, "most time to write an answer once it is ready")
	f.DurationVar(&tokenTimeout, "token-timeout", 30*time.Second, "most time to write each event of a stream (a client that stops reading is cut off)")
	f.DurationVar(&idleTimeout, "idle-timeout", 120*time.Second, "an idle kept-alive connection is closed after this")
	f.IntVar(&maxConns, "max-connections", 256, "most connections open at once; more wait (0: no limit)")
	f.StringVar(&merge, "merge", "", "adapter folder to merge into the base weights at load (a single-adapter deployment; not with --quantize)")
	f.StringVar(&host, "host", "127.0.0.1", "address to listen on")
	f.IntVar(&port, "port", 8080, "port to listen on")
	f.StringVar(&apiKey, "api-key", "", "require this key as Authorization: Bearer KEY")
	f.IntVar(&maxConcurrent, "max-concurrent", 4, "requests decoded together, in shared steps whatever their adapters")
	f.IntVar(&maxWaiting, "max-waiting", 16, "requests that wait for a slot once max-concurrent run; more get 429")
	f.IntVar(&contextLen, "context", 0, "most tokens (prompt and completion) a request holds; the KV cache takes max-concurrent × context positions (default: the model's context, at most 2048)")
	f.StringVar(&device, "device", "auto", "auto, cpu, webgpu, webgpu:N, vulkan or vulkan:N")
	f.StringVar(&quantize, "quantize", "", "store the base weights in 4 bits: nf4 or fp4")
	f.StringVar(&head, "head", model.HeadAuto, headUsage)
	f.StringVar(&compute, "compute", "f32", computeUsage)
	return cmd
}

// boundHost is the address a server listening on host is bound to: every one for an empty host.
func boundHost(host string) string {
	if host == "" {
		return "::"
	}
	return host
}

// loopback reports whether host is a loopback address or name.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
