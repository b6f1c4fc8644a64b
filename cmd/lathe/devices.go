package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/backends"
)

func newDevicesCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "devices",
		Short: "List the devices lathe can run on, best first as --device auto would pick",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			devs := backends.List()
			if !asJSON {
				w := cmd.OutOrStdout()
				for _, d := range devs {
					if d.Err != "" {
						fmt.Fprintf(w, "%-7s  error: %s\n", d.Backend, d.Err)
						continue
					}
					mem := ""
					if d.MemoryBytes > 0 {
						mem = fmt.Sprintf(", %.1f GiB", float64(d.MemoryBytes)/(1<<30))
					}
					feats := d.Features
					if len(feats) > 6 { // the JSON line has them all
						feats = append(feats[:6:6], "…")
					}
					fmt.Fprintf(w, "%s:%d  %s (%s, %s, %s%s) %s%s\n", d.Backend, d.Index, d.Name, d.Vendor, d.Type, d.API, mem, strings.Join(feats, " "), capsText(d.Caps))
				}
			}
			return printJSON(cmd.OutOrStdout(), devs)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print only the JSON array")
	return cmd
}

// capsText names the kernel-relevant caps a listing has ("" when the provider gives none).
func capsText(c *engine.Caps) string {
	if c == nil {
		return ""
	}
	var on []string
	for _, x := range []struct {
		ok   bool
		name string
	}{{c.ShaderF16, "f16"}, {c.Subgroups, "subgroups"}, {c.Timestamps, "timestamps"}} {
		if x.ok {
			on = append(on, x.name)
		}
	}
	if len(on) == 0 {
		return "; caps: none"
	}
	return "; caps: " + strings.Join(on, " ")
}
