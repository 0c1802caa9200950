package main

import (
	"context"
	"fmt"

	"github.com/urfave/cli/v2"
	"github.com/vipmux/vipmux/control"
)

// maintCommand is `vipmux maint`: HAProxy's `set server state maint`.
func maintCommand() *cli.Command { return memberStateCommand(control.StateMaint) }

// readyCommand is `vipmux ready`: HAProxy's `set server state ready`.
func readyCommand() *cli.Command { return memberStateCommand(control.StateReady) }

// memberStateCommand is `vipmux maint` (state control.StateMaint) or
// `vipmux ready` (control.StateReady).
func memberStateCommand(state string) *cli.Command {
	cmd := &cli.Command{
		Name:  "maint",
		Usage: "put a server in maintenance: registered and visible, no new connections, established ones go on",
		Description: `The server stays in the table (status shows it down, cause maint) and takes
no new connection; its established connections continue. An active server
in maintenance hands its port to the first healthy standby (mode 2); an
IP of mode 1 keeps its address and refuses new connections (RST). Health
checks and registrations leave it in maintenance; vipmux ready ends it.
--port limits it to the server's bindings of one port.

Examples:
   vipmux maint --name web-a
   vipmux maint --name web-a --port 8080`,
	}
	if state == control.StateReady {
		cmd.Name = "ready"
		cmd.Usage = "take a server out of maintenance: it takes new connections again"
		cmd.Description = `Ends vipmux maint: the server is up again. A former active whose port a
standby took over stays a standby (vipmux switch makes it active again)
unless [health] failback is on. --port limits it to the server's bindings
of one port.

Examples:
   vipmux ready --name web-a
   vipmux ready --name web-a --port 8080`
	}
	cmd.Flags = clientFlags(nameFlag(),
		portFlagOf("port", "only the server's bindings of `PORT` (1-65535); default every binding of the server"),
	)
	cmd.Action = withClient(func(ctx context.Context, c *cli.Context, cl *control.Client) error {
		if err := requireFlags(c, "name"); err != nil {
			return err
		}
		res, err := cl.Maint(ctx, control.MaintRequest{Name: c.String("name"), Port: portFlag(c), State: state})
		if err != nil {
			return fmt.Errorf("%s %s: %w", cmd.Name, c.String("name"), err)
		}
		return printBindings(c.App.Writer, res.Bindings)
	})
	return cmd
}
