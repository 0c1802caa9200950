package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/vipmux/vipmux/control"
)

func eventsCommand() *cli.Command {
	return &cli.Command{
		Name:  "events",
		Usage: "show the recent automatic changes, or with --follow stream every change of the table as it happens",
		Description: `Without --follow: the gateway's recent automatic changes (failovers,
health checks, leases), oldest first, as status shows them under the table.

With --follow: every change of a member from now on (registered, removed,
active, standby, down, up, updated), one line each as the gateway makes
it, until Ctrl-C. With --json, one JSON object per line (JSON Lines).

Examples:
   vipmux events
   vipmux events --follow
   vipmux events --follow --json | jq -c 'select(.what == "down")'`,
		Flags: clientFlags(
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "stream the changes as they happen, until Ctrl-C"},
			&cli.BoolFlag{Name: "json", Usage: "one JSON object per line"},
		),
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageErrorf(c, "unexpected argument %q (flags go before it)", c.Args().First())
			}
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			if c.Bool("follow") {
				return followEvents(c, cl)
			}
			ctx, cancel := context.WithTimeout(c.Context, clientTimeout(c))
			defer cancel()
			s, err := cl.Status(ctx)
			if err != nil {
				return fmt.Errorf("events: %w", err)
			}
			if !c.Bool("json") {
				if len(s.Events) == 0 {
					_, err := fmt.Fprintln(c.App.Writer, "no automatic changes yet")
					return err
				}
				return printEvents(c.App.Writer, s.Events, len(s.Events))
			}
			enc := json.NewEncoder(c.App.Writer)
			for _, e := range s.Events {
				if err := enc.Encode(e); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

// followEvents prints the table's changes as the gateway streams them,
// until SIGINT or SIGTERM (then it returns nil) or the stream ends.
func followEvents(c *cli.Context, cl *control.Client) error {
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	w := c.App.Writer
	print := func(cv control.ChangeView) error { return printChange(w, cv) }
	if c.Bool("json") {
		enc := json.NewEncoder(w)
		print = func(cv control.ChangeView) error { return enc.Encode(cv) }
	}
	if err := cl.Events(ctx, print); err != nil {
		return fmt.Errorf("events --follow: %w", err)
	}
	return nil
}

// printChange prints one change as a line: time, binding, member, what,
// and the member's state, health and reason.
func printChange(w io.Writer, cv control.ChangeView) error {
	state := cv.State
	if cv.Down {
		state += ", down"
	}
	line := fmt.Sprintf("%s  %-22s %-16s %-10s", cv.Time.Local().Format(time.DateTime), cv.Binding, cv.Member, cv.What)
	if state != "" {
		line += "  " + state
	}
	if cv.Why != "" {
		line += "  (" + cv.Why + ")"
	}
	_, err := fmt.Fprintln(w, line)
	return err
}
