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
	"strings"

	"github.com/urfave/cli/v2"
)

func main() {
	if err := newApp().Run(os.Args); err != nil {
		// vipmux run exits with its command's status, without a message.
		var ec cli.ExitCoder
		if errors.As(err, &ec) && err.Error() == "" {
			os.Exit(ec.ExitCode())
		}
		fmt.Fprintln(os.Stderr, errorText(err))
		os.Exit(1)
	}
}

// errorText is what main prints for err: "vipmux: " and the error; for a
// mistake on the command line, one line and a hint to --help.
func errorText(err error) string {
	var ue *usageError
	if errors.As(err, &ue) {
		prefix := "vipmux: "
		if ue.cmd != "" {
			prefix += ue.cmd + ": "
		}
		return prefix + ue.msg + "\n" + ue.hint()
	}
	return "vipmux: " + err.Error()
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
   vipmux check --config /etc/vipmux/vipmux.toml
   vipmux help register

Files:
   /etc/vipmux/vipmux.toml       the config (serve --config, $VIPMUX_CONFIG)
   /var/lib/vipmux/state.json    the table, kept across restarts ([state] path)
   /etc/vipmux/token             the API token, if [control] token_file names it

Client commands (register, deregister, switch, renew, run, status, reload)
find the gateway by --gateway, else $VIPMUX_GATEWAY, else [control] listen
and token_file of the config file (--config, $VIPMUX_CONFIG or
/etc/vipmux/vipmux.toml), else 127.0.0.1:7070: on the gateway's own host,
plain "vipmux status" works. Their flags --gateway, --token-file, --config
and --timeout may come before the command as well as after it.

Words: a server (a server computer) is what registers; the API and the
metrics call its entry in a binding a member ("members", "member_up"):
the same thing.

Environment:
   VIPMUX_CONFIG      the config file of serve, check and the client commands (--config)
   VIPMUX_GATEWAY     the control API of the client commands: host:port or URL (--gateway)
   VIPMUX_TOKEN_FILE  the token file of the client commands (--token-file)

Exit status:
   0 on success; 1 with a message on stderr on any error (a bad config names
   the key; a mistake on the command line is one line and a hint to
   --help); vipmux check exits 1 when serve would not start with the
   config; vipmux run exits with its command's status.`,
		Version:              buildVersion(),
		EnableBashCompletion: true,
		HideHelpCommand:      true,
		Flags:                clientFlags(),
		Action:               appAction,
		Before:               appBefore,
		OnUsageError:         onUsageError,
		Commands: []*cli.Command{
			serveCommand(),
			checkCommand(),
			registerCommand(),
			deregisterCommand(),
			switchCommand(),
			maintCommand(),
			captureCommand(),
			readyCommand(),
			renewCommand(),
			runCommand(),
			statusCommand(),
			eventsCommand(),
			reloadCommand(),
			clusterCommand(),
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
		if cmd.OnUsageError == nil {
			cmd.OnUsageError = onUsageError
		}
	}
	return app
}

// appBefore refuses the app's client flags before serve, which has its own
// --config and takes no other: "vipmux --config X serve" would otherwise
// serve the default config.
func appBefore(c *cli.Context) error {
	if c.Args().First() != "serve" {
		return nil
	}
	for _, f := range []string{"config", "gateway", "token-file", "timeout"} {
		if setIn(c, f) != nil {
			return usageErrorf(c, "--%s before serve: serve takes its own flags after it (vipmux serve --config FILE)", f)
		}
	}
	return nil
}

// appAction runs when no command matched: without arguments it shows the
// help; "help COMMAND" shows the command's; anything else is an unknown
// command, with the nearest one suggested.
func appAction(c *cli.Context) error {
	args := c.Args()
	switch {
	case args.Len() == 0:
		return cli.ShowAppHelp(c)
	case args.First() == "help" && args.Len() == 1:
		return cli.ShowAppHelp(c)
	case args.First() == "help" && args.Len() == 2:
		if c.App.Command(args.Get(1)) != nil {
			return cli.ShowCommandHelp(c, args.Get(1))
		}
		return unknownCommand(c, args.Get(1))
	case args.First() == "help":
		return usageErrorf(c, "help: want one command, not %q", strings.Join(args.Slice()[1:], " "))
	}
	return unknownCommand(c, args.First())
}

// unknownCommand is the error for a command that does not exist, with the
// nearest visible one suggested when there is one close enough.
func unknownCommand(c *cli.Context, name string) error {
	msg := fmt.Sprintf("unknown command %q", name)
	var names []string
	for _, cmd := range c.App.VisibleCommands() {
		names = append(names, cmd.Names()...)
	}
	if s := nearest(names, name); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	}
	return &usageError{msg: msg}
}

// nearest returns the name nearest to name by edit distance, if it is
// within a third of name's length (at least 1), else "".
func nearest(names []string, name string) string {
	best, bestD := "", max(1, len(name)/3)+1
	for _, n := range names {
		if d := editDistance(n, name); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b,
// in bytes: insertions, deletions, substitutions and transpositions of
// adjacent bytes ("nmae" is one from "name") each count one.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
