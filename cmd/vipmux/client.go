package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/urfave/cli/v2"
	"github.com/vipmux/vipmux/config"
	"github.com/vipmux/vipmux/control"
	"github.com/vipmux/vipmux/registry"
)

// clientFlags are the flags of every command that talks to a gateway. The
// app has them too, so that they may come before the command (vipmux
// --gateway X status) as well as after it; flagString, clientTimeout and
// resolveGateway read them from either place.
func clientFlags(extra ...cli.Flag) []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "gateway", Usage: "`ADDRESS` of the gateway's control API: host:port (as [control] listen writes it) or a URL; default $VIPMUX_GATEWAY, else [control] listen of --config, else " + defaultGateway},
		&cli.PathFlag{Name: "token-file", Usage: "`FILE` holding the API token; default $VIPMUX_TOKEN_FILE, else [control] token_file of --config when the address came from it"},
		&cli.PathFlag{Name: "config", Usage: "the gateway's config `FILE`, read for [control] listen, token_file and tls_cert (https) when neither --gateway nor $VIPMUX_GATEWAY is given; default $VIPMUX_CONFIG, else " + defaultConfig + " if it exists"},
		&cli.PathFlag{Name: "ca-file", Usage: "PEM `FILE` of the CA certificates that an https gateway's certificate must chain to; default $VIPMUX_CA_FILE, else the system's roots"},
		durationFlag("timeout", defaultTimeout, "give up on the gateway after `DURATION`"),
	}, extra...)
}

// defaultGateway is the control API that the client calls when nothing
// names one: [control] listen's default.
const defaultGateway = "127.0.0.1:7070"

// defaultTimeout is --timeout's default.
const defaultTimeout = 10 * time.Second

// setIn returns the innermost context of c's lineage (the command, then
// the app) whose command line gives one of the flag's names, or nil.
func setIn(c *cli.Context, names ...string) *cli.Context {
	for _, x := range c.Lineage() {
		if x.App == nil || x.Command == nil {
			continue // the empty context above the app's
		}
		for _, n := range x.LocalFlagNames() {
			if slices.Contains(names, n) {
				return x
			}
		}
	}
	return nil
}

// flagString returns the string flag name as given after the command or,
// failing that, before it; "" when given in neither place.
func flagString(c *cli.Context, names ...string) string {
	if x := setIn(c, names...); x != nil {
		return x.String(names[0])
	}
	return ""
}

// clientTimeout is --timeout, given before or after the command.
func clientTimeout(c *cli.Context) time.Duration {
	if x := setIn(c, "timeout"); x != nil {
		return x.Duration("timeout")
	}
	return defaultTimeout
}

// configPath returns the config file named by --config (after or before
// the command), else $VIPMUX_CONFIG, else defaultConfig; explicit is false
// for the default.
func configPath(c *cli.Context) (path string, explicit bool) {
	if p := flagString(c, "config", "c"); p != "" {
		return p, true
	}
	if p := os.Getenv("VIPMUX_CONFIG"); p != "" {
		return p, true
	}
	return defaultConfig, false
}

// gatewayTarget is where the client commands send their requests.
type gatewayTarget struct {
	url       string // the API's base URL
	tokenFile string // "" for no token
	from      string // where url came from, for messages: "--gateway", ...
	tokenFrom string // where tokenFile came from, likewise
	tls       bool   // the config's API speaks HTTPS (tls_cert)
}

// resolveGateway finds the gateway and its token: --gateway, else
// $VIPMUX_GATEWAY, else [control] listen of the config file (with its
// token_file), else defaultGateway. --token-file or $VIPMUX_TOKEN_FILE win
// over the config's token_file. The config's token is used only for the
// config's address, so that it is never sent to another host.
func resolveGateway(c *cli.Context) (gatewayTarget, error) {
	g := gatewayTarget{tokenFile: flagString(c, "token-file"), tokenFrom: "--token-file"}
	if g.tokenFile == "" {
		g.tokenFile, g.tokenFrom = os.Getenv("VIPMUX_TOKEN_FILE"), "$VIPMUX_TOKEN_FILE"
	}
	addr := ""
	switch {
	case flagString(c, "gateway") != "":
		addr, g.from = flagString(c, "gateway"), "--gateway"
	case os.Getenv("VIPMUX_GATEWAY") != "":
		addr, g.from = os.Getenv("VIPMUX_GATEWAY"), "$VIPMUX_GATEWAY"
	default:
		path, explicit := configPath(c)
		ctl, err := readControl(path)
		switch {
		case err == nil:
			addr, g.from = ctl.Listen, "[control] listen of "+path
			g.tls = ctl.TLSCert != ""
			if g.tokenFile == "" {
				g.tokenFile, g.tokenFrom = ctl.TokenFile, "[control] token_file of "+path
			}
		case !explicit && errors.Is(err, fs.ErrNotExist):
			addr, g.from = defaultGateway, "the default"
		default:
			return g, fmt.Errorf("--config %s: %w (or name the gateway with --gateway)", path, err)
		}
	}
	u, err := gatewayURL(addr)
	if err != nil {
		return g, fmt.Errorf("%s: %w", g.from, err)
	}
	if g.tls {
		u = "https://" + strings.TrimPrefix(u, "http://")
	}
	g.url = u
	return g, nil
}

// readControl returns the [control] section of the config file at path.
// A file that has errors elsewhere still gives its [control] section, so
// that the client works while the file is being edited.
func readControl(path string) (config.Control, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return config.Control{}, err
	}
	if cfg, err := config.Parse(data); err == nil {
		return cfg.Control, nil
	}
	// The file does not validate: take [control] alone, with its default.
	var raw struct {
		Control struct {
			Listen    string `toml:"listen"`
			TokenFile string `toml:"token_file"`
			TLSCert   string `toml:"tls_cert"`
		} `toml:"control"`
	}
	if _, err := toml.Decode(string(data), &raw); err != nil {
		return config.Control{}, fmt.Errorf("cannot read [control]: %w", err)
	}
	ctl := config.Control{Listen: raw.Control.Listen, TokenFile: raw.Control.TokenFile, TLSCert: raw.Control.TLSCert}
	if ctl.Listen == "" {
		ctl.Listen = config.Default().Control.Listen
	}
	return ctl, nil
}

// gatewayURL turns --gateway into the API's base URL: a URL (http:// or
// https://) is kept, host:port (the form of [control] listen) becomes
// http://host:port, and a listen address on every interface (":7070",
// "0.0.0.0:7070", "[::]:7070") is called on loopback.
func gatewayURL(addr string) (string, error) {
	addr = strings.TrimSpace(addr)
	if strings.Contains(addr, "://") {
		u, err := url.Parse(addr)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return "", fmt.Errorf("%q: write host:port such as %q, or a URL such as %q", addr, defaultGateway, "http://"+defaultGateway)
		}
		return strings.TrimRight(addr, "/"), nil
	}
	host, port, err := net.SplitHostPort(addr)
	if n, perr := strconv.ParseUint(port, 10, 16); err != nil || perr != nil || n == 0 {
		return "", fmt.Errorf("%q: write host:port such as %q, or a URL such as %q", addr, defaultGateway, "http://"+defaultGateway)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

func newClient(c *cli.Context) (*control.Client, error) {
	g, err := resolveGateway(c)
	if err != nil {
		return nil, err
	}
	cl := &control.Client{BaseURL: g.url}
	caFile, caFrom := flagString(c, "ca-file"), "--ca-file"
	if caFile == "" {
		caFile, caFrom = os.Getenv("VIPMUX_CA_FILE"), "$VIPMUX_CA_FILE"
	}
	if caFile != "" {
		if !strings.HasPrefix(g.url, "https://") {
			return nil, fmt.Errorf("%s: %s is not https (from %s): a CA file is for a gateway with [control] tls_cert; write https://HOST:PORT", caFrom, g.url, g.from)
		}
		tc, err := control.ClientTLS(caFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", caFrom, err)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = tc
		cl.HTTP = &http.Client{Transport: tr, Timeout: clientTimeout(c)}
	}
	if g.tokenFile != "" {
		t, err := control.ReadTokenFile(g.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", g.tokenFrom, err)
		}
		cl.Token = t
	}
	return cl, nil
}

// withClient runs fn with a client and a context bounded by --timeout.
func withClient(fn func(ctx context.Context, c *cli.Context, cl *control.Client) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		if c.NArg() > 0 {
			return usageErrorf(c, "unexpected argument %q (flags go before it)", c.Args().First())
		}
		cl, err := newClient(c)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(c.Context, clientTimeout(c))
		defer cancel()
		return fn(ctx, c, cl)
	}
}

// portFlag returns --port as the API's optional port: nil when not given.
func portFlag(c *cli.Context) *int {
	if !c.IsSet("port") {
		return nil
	}
	p := c.Int("port")
	return &p
}

// proxyProtocolFlag is --proxy-protocol of register and run.
func proxyProtocolFlag() cli.Flag {
	return choiceFlag("proxy-protocol", "none", "send the backend a PROXY protocol header of `VERSION` v1 or v2 as the first bytes of each connection, with the client's address and port and the front address and port it dialled (the backend must expect it); none sends no header", "none", "v1", "v2")
}

// proxyProtocol returns --proxy-protocol as the API spells it, or an error
// naming the flag. None is "", which the request omits, so that a gateway
// from before the setting still takes the registration.
func proxyProtocol(c *cli.Context) (string, error) {
	v := c.String("proxy-protocol")
	pp, err := registry.ParseProxyProtocol(v)
	if err != nil || v == "" {
		return "", fmt.Errorf("--proxy-protocol %q: use v1, v2 or none", v)
	}
	return string(pp), nil
}

// nameFlag, ipFlag and portOpt are flags of several commands; each call
// returns a new flag, whose value is its own.
func nameFlag() cli.Flag {
	return &cli.StringFlag{Name: "name", Usage: "server computer `NAME` ([A-Za-z0-9._-], at most 63; required)"}
}

func ipFlag() cli.Flag {
	return &cli.GenericFlag{Name: "ip", Value: &ipValue{}, Usage: "front `IP` (mode 1: the server's own; with --port: a gateway-held IP, default [shared] address)"}
}

func portOpt() cli.Flag {
	return portFlagOf("port", "mode 2: the `PORT` (1-65535) on the shared IP; omit for every port (mode 1)")
}

// stateFlag is --state of register and run.
func stateFlag() cli.Flag {
	return choiceFlag("state", "", "mode 2: `STATE` active or standby (default: active if the port has no active server, else standby)", "active", "standby")
}

func registerCommand() *cli.Command {
	return &cli.Command{
		Name:  "register",
		Usage: "register a server computer for an IP (mode 1) or a port (mode 2), or many from a file",
		Description: `Run by a server application's start script (or by an operator).

Examples:
   vipmux register --name web-a --ip 198.18.0.10 --backend 198.19.0.2
   vipmux register --name web-a --port 8080 --backend 198.19.0.2:8080 --state active
   vipmux register --name web-b --port 8080 --backend 198.19.0.3:8080   # standby
   vipmux register --name web-a --ip 198.18.0.10 --backend 198.19.0.2 --ttl 10s   # renew within 10s
   vipmux register --name web-a --ip 198.18.0.10 --backend 198.19.0.2 --proxy-protocol v2   # backend learns the client's address
   vipmux register --file servers.txt   # many at once, all or nothing

--file FILE (or - for standard input) registers many servers as one change:
one write to the state file and one answer, all or nothing (at most 100000).
FILE holds one registration per line, written as the flags of this command
(--name, --ip, --port, --backend, --state, --ttl, --proxy-protocol; a
leading "vipmux register" is allowed); blank lines and text after # are
ignored:

   # name      front IP                 backend
   --name s1  --ip 198.18.100.1  --backend 198.19.0.2
   --name s2  --ip 198.18.100.2  --backend 198.19.0.3 --ttl 1m
   --name web-c --port 8080 --backend 198.19.0.4:8080 --state standby

A bad line is reported with its line number, and nothing is registered.`,
		Flags: clientFlags(
			&cli.StringFlag{Name: "name", Usage: "server computer `NAME` ([A-Za-z0-9._-], at most 63); required without --file"},
			ipFlag(), portOpt(),
			&cli.StringFlag{Name: "backend", Usage: "`HOST[:PORT]` of the server application; without a port, the port the client dialled; required without --file"},
			stateFlag(),
			ttlFlag(),
			proxyProtocolFlag(),
			&cli.StringFlag{Name: "file", Usage: "register every line of `FILE` (- for standard input) in one change; see below"},
		),
		Action: withClient(func(ctx context.Context, c *cli.Context, cl *control.Client) error {
			if c.IsSet("file") {
				return registerFile(ctx, c, cl)
			}
			for _, f := range []string{"name", "backend"} {
				if !c.IsSet(f) {
					return usageErrorf(c, "--%s is required (or --file FILE)", f)
				}
			}
			pp, err := proxyProtocol(c)
			if err != nil {
				return err
			}
			req := control.RegisterRequest{
				Name: c.String("name"), IP: c.String("ip"), Port: portFlag(c),
				Backend: c.String("backend"), State: c.String("state"),
				ProxyProtocol: pp,
			}
			if c.IsSet("ttl") {
				req.TTL = c.Duration("ttl").String()
			}
			b, err := cl.Register(ctx, req)
			if err != nil {
				return fmt.Errorf("register %s: %w", c.String("name"), err)
			}
			return printBindings(c.App.Writer, []control.BindingView{b})
		}),
	}
}

// registerFile is register --file: every line of the file in one batch.
func registerFile(ctx context.Context, c *cli.Context, cl *control.Client) error {
	for _, f := range regFileFlags {
		if c.IsSet(f) {
			return fmt.Errorf("--%s: with --file, give it on the file's lines instead", f)
		}
	}
	f, err := readRegFile(c.String("file"), c.App.Reader)
	if err != nil {
		return err
	}
	res, err := cl.RegisterBatch(ctx, control.RegisterBatchRequest{Registrations: f.regs})
	if err != nil {
		return fmt.Errorf("register --file: %w", f.explain(err))
	}
	if err := printBindings(c.App.Writer, res.Bindings); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "registered %d from %s in one change (%d bindings)\n", res.Registered, f.name, len(res.Bindings))
	return nil
}

func deregisterCommand() *cli.Command {
	return &cli.Command{
		Name:  "deregister",
		Usage: "remove a server computer from an IP (mode 1) or a port (mode 2)",
		Description: `Examples:
   vipmux deregister --name web-a --ip 198.18.0.10
   vipmux deregister --name web-a --port 8080
   vipmux deregister --name web-a --ip 198.18.0.10 --drain 30s   # let open connections finish`,
		Flags: clientFlags(nameFlag(), ipFlag(), portOpt(),
			durationFlag("drain", 0, "refuse new connections at once but let established ones run up to `DURATION` (at most 1h) before closing them; default: close them at once"),
		),
		Action: withClient(func(ctx context.Context, c *cli.Context, cl *control.Client) error {
			if err := requireFlags(c, "name"); err != nil {
				return err
			}
			req := control.DeregisterRequest{Name: c.String("name"), IP: c.String("ip"), Port: portFlag(c)}
			if c.IsSet("drain") {
				req.Drain = c.Duration("drain").String()
			}
			err := cl.Deregister(ctx, req)
			if err != nil {
				return fmt.Errorf("deregister %s: %w", c.String("name"), err)
			}
			fmt.Fprintf(c.App.Writer, "deregistered %s\n", c.String("name"))
			return nil
		}),
	}
}

func switchCommand() *cli.Command {
	return &cli.Command{
		Name:  "switch",
		Usage: "mode 2: make a standby the active server of a port",
		Description: `New connections go to the new active server as soon as the command returns;
established connections keep running. A switch to a server that the
gateway knows to be down (health check or lease) is refused, since it would
leave the port without a server, unless --force: the server is then marked
up until its next health check.

Example:
   vipmux switch --port 8080 --to web-b`,
		Flags: clientFlags(ipFlag(),
			portFlagOf("port", "the `PORT` (1-65535; required)"),
			&cli.StringFlag{Name: "to", Usage: "`NAME` of the server to make active (required)"},
			&cli.BoolFlag{Name: "force", Usage: "switch even to a server known to be down"},
		),
		Action: withClient(func(ctx context.Context, c *cli.Context, cl *control.Client) error {
			if err := requireFlags(c, "port", "to"); err != nil {
				return err
			}
			b, err := cl.Switch(ctx, control.SwitchRequest{IP: c.String("ip"), Port: portFlag(c), To: c.String("to"), Force: c.Bool("force")})
			if err != nil {
				return fmt.Errorf("switch port %d to %s: %w", c.Int("port"), c.String("to"), err)
			}
			return printBindings(c.App.Writer, []control.BindingView{b})
		}),
	}
}

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show the table: ip, port, state, server, backend, PROXY protocol, connections, health, lease, and recent automatic changes",
		Description: `With --watch, the table is fetched again every --interval and redrawn in
place on a terminal (one table after another when the output is not a
terminal) until Ctrl-C; a failed fetch is shown and retried. With --watch
--json, one JSON object per line and refresh (JSON Lines).

The first line counts the whole table: bindings, members, down, draining,
held IPs. --ip, --port, --name and --down narrow the table below it (all
that are given must match). HEALTH is "-" for mode-1 rows, which are not
health-checked. vipmux events --follow streams the changes instead.

Examples:
   vipmux status
   vipmux status --down
   vipmux status --ip 198.18.0.10
   vipmux status --watch --interval 500ms
   vipmux status --json | jq .
   vipmux status --watch --json | jq -c '.bindings[].members[].connections'`,
		Flags: clientFlags(
			&cli.BoolFlag{Name: "json", Usage: "print the API's JSON"},
			&cli.BoolFlag{Name: "watch", Aliases: []string{"w"}, Usage: "refresh until Ctrl-C"},
			durationFlag("interval", time.Second, "with --watch: `DURATION` between refreshes (at least 100ms)"),
			&cli.GenericFlag{Name: "ip", Value: &ipValue{}, Usage: "show only the bindings of front `IP`"},
			portFlagOf("port", "show only the bindings of `PORT` (1-65535)"),
			&cli.StringFlag{Name: "name", Usage: "show only the members named `NAME`"},
			&cli.BoolFlag{Name: "down", Usage: "show only the members that are down, and the bindings without a serving member"},
		),
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageErrorf(c, "unexpected argument %q (flags go before it)", c.Args().First())
			}
			if c.IsSet("interval") && !c.Bool("watch") {
				return usageErrorf(c, "--interval: only with --watch")
			}
			if iv := c.Duration("interval"); iv < minWatchInterval {
				return usageErrorf(c, "--interval %v: must be at least %v", iv, minWatchInterval)
			}
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			filter := statusFilterOf(c)
			if c.Bool("watch") {
				return watchStatus(c, cl, filter)
			}
			ctx, cancel := context.WithTimeout(c.Context, clientTimeout(c))
			defer cancel()
			s, err := cl.Status(ctx)
			if err != nil {
				return fmt.Errorf("status: %w", err)
			}
			s = filter.apply(s)
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(s)
			}
			return printStatus(c.App.Writer, s, time.Now())
		},
	}
}

// printStatus prints the whole status: the shared address, the table as of
// now, and the recent automatic changes.
func printStatus(w io.Writer, s control.Status, now time.Time) error {
	sum := s.Summary
	fmt.Fprintf(w, "%d bindings, %d members, %d down, %d draining, %d held IPs\n", sum.Bindings, sum.Members, sum.Down, sum.Draining, sum.HeldIPs)
	if s.Shared != "" {
		fmt.Fprintf(w, "shared address %s\n", s.Shared)
	}
	if len(s.Bindings) == 0 && sum.Bindings > 0 {
		fmt.Fprintln(w, "no binding matches the filters")
	} else if len(s.Bindings) == 0 {
		fmt.Fprintln(w, "no bindings: nothing registered")
	} else if err := printBindingsAt(w, s.Bindings, now); err != nil {
		return err
	}
	return printEvents(w, s.Events, statusEvents)
}

// printBindings prints bindings as the patent's correspondence table, one
// line per member, and says plainly which bindings refuse connections.
func printBindings(w io.Writer, bs []control.BindingView) error {
	return printBindingsAt(w, bs, time.Now())
}

// printBindingsAt is printBindings with leases shown as of now.
func printBindingsAt(w io.Writer, bs []control.BindingView, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	// A gateway of a cluster says which gateway holds each IP.
	clustered := slices.ContainsFunc(bs, func(b control.BindingView) bool { return b.Holder != "" })
	holder := func(b control.BindingView) string {
		if clustered {
			return "\t" + b.Holder
		}
		return ""
	}
	fmt.Fprint(tw, "IP\tPORT\tSTATE\tSERVER\tBACKEND\tPROXY\tCONNS\tHEALTH\tLEASE\tSINCE\tREASON")
	fmt.Fprintln(tw, holder(control.BindingView{Holder: "HOLDER"}))
	var dark []string
	for _, b := range bs {
		port := "*"
		if b.Port != 0 {
			port = strconv.Itoa(b.Port)
		}
		active, downActive := false, ""
		for _, m := range b.Members {
			health := "up"
			switch {
			case b.Port == 0:
				health = "-" // mode 1: not health-checked
			case m.Down:
				health = "down"
			}
			if m.State == "active" {
				active = true
				if m.Down {
					downActive = m.Name
				}
			}
			proxy := m.ProxyProtocol // the PROXY protocol header sent to the backend
			if proxy == "" {
				proxy = "none"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s%s\n", b.IP, port, m.State, m.Name, m.Backend, proxy, m.Connections, health, lease(m, now), m.Since.Local().Format(time.DateTime), m.Reason, holder(b))
		}
		switch {
		case !active:
			dark = append(dark, b.IP+":"+port+" has no active server: new connections are refused (RST); use switch to make one active")
		case downActive != "":
			dark = append(dark, b.IP+":"+port+" has no healthy server: its active server "+downActive+" is down and no standby is up; new connections are refused (RST)")
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, d := range dark {
		fmt.Fprintln(w, d)
	}
	return nil
}

// lease formats a member's lease as of now: "-" when permanent, else the
// TTL and the time left ("10s, 7.2s left") or "expired".
func lease(m control.MemberView, now time.Time) string {
	if m.TTL == "" {
		return "-"
	}
	left := m.Expires.Sub(now)
	if m.Expires.IsZero() || left <= 0 {
		return m.TTL + ", expired"
	}
	return m.TTL + ", " + left.Round(100*time.Millisecond).String() + " left"
}

// statusEvents is how many automatic changes status prints under the table.
const statusEvents = 10

// printEvents prints the last n automatic changes (failovers, health and
// lease changes), oldest first; nothing when there are none.
func printEvents(w io.Writer, es []control.EventView, n int) error {
	if len(es) == 0 {
		return nil
	}
	if len(es) > n {
		es = es[len(es)-n:]
	}
	fmt.Fprintf(w, "\nrecent automatic changes (last %d):\n", len(es))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tBINDING\tSERVER\tWHAT\tWHY")
	for _, e := range es {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Time.Local().Format("2006-01-02 15:04:05.000"), e.Binding, e.Member, e.What, e.Why)
	}
	return tw.Flush()
}
