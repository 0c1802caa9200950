// Command vipmux is the gateway and its command-line client.
//
// vipmux serve runs the gateway: a userspace TCP/IP stack that owns one front
// NIC, holds the IPs that server computers register, answers ARP for them
// and proxies each TCP connection to the registered server. The other
// subcommands talk to a running gateway over its control API.
//
//	vipmux serve --config /etc/vipmux/vipmux.toml
//	vipmux register --name web-a --ip 198.18.0.10 --backend 198.19.0.2
//	vipmux status
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

func main() {
	if err := newApp().Run(os.Args); err != nil {
		// vipmux run exits with its command's status, without a message.
		var ec cli.ExitCoder
		if errors.As(err, &ec) && err.Error() == "" {
			os.Exit(ec.ExitCode())
		}
		fmt.Fprintf(os.Stderr, "vipmux: %v\n", err)
		os.Exit(1)
	}
}

func newApp() *cli.App {
	app := &cli.App{
		Name:  "vipmux",
		Usage: "many server computers behind one NIC, one MAC: a userspace TCP/IP gateway",
		Description: `vipmux's gateway holds many IPs on one front NIC, answers ARP for them with
that NIC's one MAC, and proxies every TCP connection to the server computer
registered for it.

Mode 1: each server computer registers its own IP; connections to that IP go to it.
Mode 2: one shared IP; each port has one active server and standbys; switch
moves later connections to another server.

vipmux serve runs the gateway; it needs CAP_NET_RAW and CAP_NET_ADMIN, not
root (the systemd unit vipmux.service runs it as user vipmux with just
those). The other commands talk to a running gateway over its control API.
Every command has --help with examples.

Examples:
   vipmux serve --config /etc/vipmux/vipmux.toml
   vipmux register --name web-a --ip 198.18.0.10 --backend 198.19.0.2
   vipmux register --name web-a --port 8080 --backend 198.19.0.2:8080 --state active
   vipmux switch --port 8080 --to web-b
   vipmux status
   vipmux serve --help

Files:
   /etc/vipmux/vipmux.toml       the config (serve --config, $VIPMUX_CONFIG)
   /var/lib/vipmux/state.json    the table, kept across restarts ([state] path)
   /etc/vipmux/token             the API token, if [control] token_file names it

Environment:
   VIPMUX_CONFIG      serve's --config
   VIPMUX_GATEWAY     the control API URL of the client commands (--gateway)
   VIPMUX_TOKEN_FILE  the token file of the client commands (--token-file)

Exit status:
   0 on success; 1 with a message on stderr on any error (a bad config names
   the key); vipmux run exits with its command's status.`,
		Version:              version,
		EnableBashCompletion: true,
		HideHelpCommand:      true,
		Commands: []*cli.Command{
			serveCommand(),
			registerCommand(),
			deregisterCommand(),
			switchCommand(),
			renewCommand(),
			runCommand(),
			statusCommand(),
			reloadCommand(),
			versionCommand(),
			completionCommand(),
			manCommand(),
		},
		ExitErrHandler: func(*cli.Context, error) {}, // main prints and exits
	}
	for _, cmd := range app.Commands {
		if cmd.BashComplete == nil && len(cmd.Subcommands) == 0 {
			cmd.BashComplete = completeFlags(cmd)
		}
	}
	return app
}
