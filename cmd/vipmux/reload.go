package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/urfave/cli/v2"
	"github.com/vipmux/vipmux/control"
)

// reloadCommand is `vipmux reload`: ask the running gateway to re-read its
// config file, as SIGHUP does.
func reloadCommand() *cli.Command {
	return &cli.Command{
		Name:  "reload",
		Usage: "make the running gateway re-read its config file (as SIGHUP does)",
		Description: `The gateway re-reads the file it was started with and applies what changed:
[shared] address, [dispatch] dial_timeout, time_wait and delayed_ack,
[health], [arp] and [log]. Established connections are untouched. A file that does not
parse or validate, or that changes a key fixed at start-up ([nic],
[control], [state], dispatch.max_in_flight), is refused as a whole: the
gateway keeps the configuration it has, and reload exits 1 with the reason.

Examples:
   vipmux reload
   vipmux reload --gateway http://198.19.0.1:7070 --token-file /etc/vipmux/token`,
		Flags: clientFlags(),
		Action: withClient(func(ctx context.Context, c *cli.Context, cl *control.Client) error {
			res, err := cl.Reload(ctx)
			var ae *control.APIError
			if errors.As(err, &ae) && ae.Code < 500 {
				msg := ae.Message
				if ae.Field != "" && ae.Field != "config" {
					msg = ae.Field + ": " + msg // the key at fault, for the journal of systemctl reload
				}
				return fmt.Errorf("reload refused (%d %s): %s", ae.Code, http.StatusText(ae.Code), msg)
			}
			if err != nil {
				return fmt.Errorf("reload: %w", err)
			}
			if len(res.Changed) == 0 {
				fmt.Fprintln(c.App.Writer, "reloaded: nothing changed")
				return nil
			}
			fmt.Fprintf(c.App.Writer, "reloaded: %s\n", strings.Join(res.Changed, ", "))
			return nil
		}),
	}
}
