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
	return &cli.App{
		Name:  "vipmux",
		Usage: "many server computers behind one NIC, one MAC: a userspace TCP/IP gateway",
		Description: `vipmux's gateway holds many IPs on one front NIC, answers ARP for them with
that NIC's one MAC, and proxies every TCP connection to the server computer
registered for it.

Mode 1: each server computer registers its own IP; connections to that IP go to it.
Mode 2: one shared IP; each port has one active server and standbys; switch
moves later connections to another server.`,
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
		},
		ExitErrHandler: func(*cli.Context, error) {}, // main prints and exits
	}
}
