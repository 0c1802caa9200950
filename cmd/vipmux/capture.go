package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/urfave/cli/v2"
	"github.com/vipmux/vipmux/control"
)

// captureCommand is `vipmux capture`: the running gateway's front NIC
// frames as a pcap stream, through the control API (GET /v1/capture).
func captureCommand() *cli.Command {
	return &cli.Command{
		Name:  "capture",
		Usage: "stream the front NIC's frames from the running gateway in pcap format (no restart)",
		Description: `Records the frames that cross the front NIC, both ways, for --duration and
writes them as a pcap file (Ethernet, ARP included) to standard output or
--output, for tcpdump -r or Wireshark. The gateway goes on as it is; with
no capture running, capturing costs it nothing measurable. It needs the
API token. Ctrl-C ends it early; what was captured is kept.

--filter takes a subset of tcpdump's syntax: terms joined by "and", each
may be preceded by "not": arp, ip, ip6, tcp, udp, icmp, icmp6,
[src|dst] host ADDR, [src|dst] port N. Filter further with tcpdump -r.

Examples:
   vipmux capture > front.pcap
   vipmux capture --duration 1m --filter "host 198.18.0.10 and port 80" -o web.pcap
   vipmux capture --duration 5s | tcpdump -r - -nn -e`,
		Flags: clientFlags(
			durationFlag("duration", control.DefaultCaptureDuration, "capture for `DURATION` (at most 1h)"),
			&cli.StringFlag{Name: "filter", Usage: "record only the frames that `EXPR` takes (see above)"},
			&cli.StringFlag{Name: "snaplen", Usage: "cut frames to `BYTES` (1-65536); default the whole frame"},
			&cli.PathFlag{Name: "output", Aliases: []string{"o"}, Usage: "write to `FILE` (created 0600) instead of standard output"},
		),
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageErrorf(c, "unexpected argument %q (flags go before it)", c.Args().First())
			}
			d := c.Duration("duration")
			if d <= 0 || d > control.MaxCaptureDuration {
				return usageErrorf(c, "--duration %v: must be more than 0 and at most %v", d, control.MaxCaptureDuration)
			}
			snapLen := 0
			if v := c.String("snaplen"); v != "" {
				n, err := strconv.Atoi(v)
				if err != nil || n < 1 || n > 65536 {
					return usageErrorf(c, "--snaplen %q: write a number of bytes 1..65536", v)
				}
				snapLen = n
			}
			var out io.Writer = c.App.Writer
			if p := c.Path("output"); p != "" {
				f, err := createPcap(p)
				if err != nil {
					return fmt.Errorf("--output: %w", err)
				}
				defer f.Close()
				out = f
			} else if isTerminal(out) {
				return usageErrorf(c, "standard output is a terminal: redirect it (vipmux capture > front.pcap) or give --output FILE")
			}
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			// The stream lasts the capture: --timeout bounds the rest.
			ctx, cancel := context.WithTimeout(c.Context, d+clientTimeout(c))
			defer cancel()
			n, err := cl.Capture(ctx, control.CaptureRequest{Duration: d, Filter: c.String("filter"), SnapLen: snapLen}, out)
			if err != nil {
				return fmt.Errorf("capture: %w", err)
			}
			fmt.Fprintf(c.App.ErrWriter, "captured %d bytes of pcap in %v\n", n, d)
			if f, ok := out.(*os.File); ok && f != os.Stdout {
				if err := f.Sync(); err != nil {
					return fmt.Errorf("--output: %w", err)
				}
			}
			return nil
		},
	}
}
