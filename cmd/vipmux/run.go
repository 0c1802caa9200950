package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/vipmux/vipmux/control"
	"github.com/vipmux/vipmux/registry"
)

// ttlFlag is --ttl of register and run.
func ttlFlag() cli.Flag {
	return durationFlag("ttl", 0, "lease `DURATION` (100ms..24h): renew before it runs out, or the server is removed (mode 1) or marked down (mode 2); omit for a permanent registration")
}

func renewCommand() *cli.Command {
	return &cli.Command{
		Name:  "renew",
		Usage: "extend the lease of a server computer registered with --ttl",
		Description: `Extends the lease by its TTL, counted from now. A server marked down because
its lease ran out is up again. Exits non-zero with 404 when the lease was lost
(the server was removed): register again. vipmux run renews by itself.

Examples:
   vipmux renew --name web-a --ip 198.18.0.10
   vipmux renew --name web-a --port 8080`,
		Flags: clientFlags(nameFlag(), ipFlag(), portOpt()),
		Action: withClient(func(ctx context.Context, c *cli.Context, cl *control.Client) error {
			if err := requireFlags(c, "name"); err != nil {
				return err
			}
			b, err := cl.Renew(ctx, control.RenewRequest{Name: c.String("name"), IP: c.String("ip"), Port: portFlag(c)})
			if err != nil {
				return fmt.Errorf("renew %s: %w", c.String("name"), err)
			}
			return printBindings(c.App.Writer, []control.BindingView{b})
		}),
	}
}

func runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "run a server application and keep it registered while it runs",
		ArgsUsage: "-- COMMAND [ARG...]",
		Description: `Starts COMMAND (stdin, stdout and stderr passed through), waits until its
backend port accepts TCP connections, registers it, renews the lease every
TTL/3 while it runs, forwards SIGINT and SIGTERM to it, deregisters it when it
exits, and exits with its exit status (128+N when signal N killed it).

The port probed for readiness is --ready-port, else the backend's port, else
--port. If COMMAND is not ready within --ready-timeout, it is killed and run
fails. A renewal that fails is logged and retried; a renewal answered 404 (the
lease was lost) registers again. Without --ttl the registration is permanent
and nothing is renewed.

Examples:
   vipmux run --name web-a --ip 198.18.0.10 --backend 198.19.0.2:8080 --ttl 2s -- ./server --listen :8080
   vipmux run --name web-a --ip 198.18.0.10 --backend 198.19.0.2 --ready-port 8080 --ttl 2s -- ./server
   vipmux run --name web-b --port 8080 --backend 198.19.0.3 --state standby --ttl 2s -- ./server
   vipmux run --name web-a --ip 198.18.0.10 --backend 198.19.0.2:8080 --proxy-protocol v2 -- ./server --accept-proxy-protocol`,
		Flags: clientFlags(nameFlag(), ipFlag(), portOpt(),
			&cli.StringFlag{Name: "backend", Usage: "`HOST[:PORT]` of the server application; without a port, the port the client dialled (required)"},
			stateFlag(),
			ttlFlag(),
			proxyProtocolFlag(),
			portFlagOf("ready-port", "`PORT` on the backend's host that must accept connections before registering (default: the backend's port, else --port)"),
			durationFlag("ready-timeout", 30*time.Second, "kill COMMAND and fail if it is not ready after `DURATION`"),
		),
		Action: func(c *cli.Context) error {
			if err := requireFlags(c, "name", "backend"); err != nil {
				return err
			}
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			o, err := runOptionsFrom(c)
			if err != nil {
				return err
			}
			o.Client = cl
			sigc := make(chan os.Signal, 4)
			signal.Notify(sigc, os.Interrupt, syscall.SIGTERM)
			defer signal.Stop(sigc)
			o.Signals = sigc
			code, err := runServer(c.Context, o)
			if err != nil {
				return err
			}
			if code != 0 {
				return cli.Exit("", code)
			}
			return nil
		},
	}
}

// runOptions configure runServer.
type runOptions struct {
	// Client calls the gateway.
	Client *control.Client
	// Register is the registration; TTL empty means permanent.
	Register control.RegisterRequest
	// TTL is the lease, 0 for a permanent registration.
	TTL time.Duration
	// Ready is the address that must accept a TCP connection before the
	// registration.
	Ready netip.AddrPort
	// ReadyTimeout bounds the wait for Ready.
	ReadyTimeout time.Duration
	// CallTimeout bounds each call to the gateway.
	CallTimeout time.Duration
	// Args is the command and its arguments.
	Args []string
	// Stdin, Stdout and Stderr are the command's.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Signals are forwarded to the command.
	Signals <-chan os.Signal
	// Log receives run's own messages.
	Log *slog.Logger
}

// runOptionsFrom reads run's flags and arguments.
func runOptionsFrom(c *cli.Context) (runOptions, error) {
	o := runOptions{
		Register: control.RegisterRequest{
			Name: c.String("name"), IP: c.String("ip"), Port: portFlag(c),
			Backend: c.String("backend"), State: c.String("state"),
		},
		TTL:          c.Duration("ttl"),
		ReadyTimeout: c.Duration("ready-timeout"),
		CallTimeout:  clientTimeout(c),
		Args:         c.Args().Slice(),
		Stdin:        os.Stdin,
		Stdout:       c.App.Writer,
		Stderr:       c.App.ErrWriter,
		Log:          slog.New(slog.NewTextHandler(c.App.ErrWriter, nil)).With("cmd", "vipmux run", "name", c.String("name")),
	}
	if len(o.Args) == 0 {
		return o, errors.New("run: no command given: vipmux run [flags] -- COMMAND [ARG...]")
	}
	pp, err := proxyProtocol(c)
	if err != nil {
		return o, err
	}
	o.Register.ProxyProtocol = pp
	if o.TTL < 0 {
		return o, fmt.Errorf("--ttl %v: must be positive", o.TTL)
	}
	if o.TTL > 0 {
		o.Register.TTL = o.TTL.String()
	}
	if o.ReadyTimeout <= 0 {
		return o, fmt.Errorf("--ready-timeout %v: must be positive", o.ReadyTimeout)
	}
	be, err := parseHostPort(o.Register.Backend)
	if err != nil {
		return o, fmt.Errorf("--backend: %w", err)
	}
	port := int(be.Port())
	switch {
	case c.IsSet("ready-port"):
		port = c.Int("ready-port")
	case port == 0 && c.IsSet("port"):
		port = c.Int("port")
	}
	if port == 0 {
		return o, fmt.Errorf("--backend %s has no port and neither --ready-port nor --port is given: run cannot tell when the server is ready", o.Register.Backend)
	}
	if port < 1 || port > 65535 {
		return o, fmt.Errorf("ready port %d is out of range 1..65535", port)
	}
	o.Ready = netip.AddrPortFrom(be.Addr(), uint16(port))
	return o, nil
}

// parseHostPort parses "HOST" or "HOST:PORT" (HOST an IP literal, IPv6 in
// brackets when a port follows); port 0 when absent.
func parseHostPort(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap, nil
	}
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: want HOST or HOST:PORT with HOST an IP address", s)
	}
	return netip.AddrPortFrom(a, 0), nil
}

// readyPoll is how often run tries the backend port.
const readyPoll = 50 * time.Millisecond

// runServer runs o.Args until it exits and returns its exit status; the
// error is for run's own failures (the command could not start, was not
// ready in time, or the gateway refused the registration).
func runServer(ctx context.Context, o runOptions) (int, error) {
	cmd := exec.Command(o.Args[0], o.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = o.Stdin, o.Stdout, o.Stderr
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("run %s: %w", o.Args[0], err)
	}
	done := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(done)
	}()
	exitCode := func() int { <-done; return exitStatus(cmd.ProcessState, waitErr) }
	// stop kills the command after a failure of run's own and waits for it.
	stop := func() {
		cmd.Process.Kill()
		<-done
	}

	// Wait for readiness; the command may exit or be signalled meanwhile.
	ready := make(chan struct{})
	readyCtx, cancelReady := context.WithTimeout(ctx, o.ReadyTimeout)
	defer cancelReady()
	go func() {
		if waitReady(readyCtx, o.Ready) == nil {
			close(ready)
		}
	}()
wait:
	for {
		select {
		case <-ready:
			break wait
		case <-done:
			o.Log.Info("command exited before it was ready; not registered", "exit", exitCode())
			return exitCode(), nil
		case sig := <-o.Signals:
			cmd.Process.Signal(sig)
		case <-readyCtx.Done():
			// Without this, a ready that raced the timeout is lost.
			select {
			case <-ready:
				break wait
			default:
			}
			stop()
			if ctx.Err() != nil {
				return 0, fmt.Errorf("run %s: %w", o.Args[0], ctx.Err())
			}
			return 0, fmt.Errorf("run %s: nothing accepted connections on %s within %v (--ready-timeout); killed the command", o.Args[0], o.Ready, o.ReadyTimeout)
		}
	}
	cancelReady()

	// Register; retry while the gateway cannot be reached, give up when
	// it refuses.
	register := func(timeout time.Duration) error {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		_, err := o.Client.Register(cctx, o.Register)
		return err
	}
	registered := false
	retry := time.NewTimer(0)
	defer retry.Stop()
	for !registered {
		select {
		case <-retry.C:
			err := register(o.CallTimeout)
			var apiErr *control.APIError
			switch {
			case err == nil:
				registered = true
				o.Log.Info("registered", "ip", o.Register.IP, "port", portString(o.Register.Port), "backend", o.Register.Backend, "ttl", o.TTL, "proxy_protocol", registry.ProxyProtocol(o.Register.ProxyProtocol).String())
			case errors.As(err, &apiErr):
				stop()
				return 0, fmt.Errorf("register %s: %w; killed the command", o.Register.Name, err)
			default:
				o.Log.Warn("register failed; retrying", "err", err)
				retry.Reset(time.Second)
			}
		case <-done:
			return exitCode(), nil
		case sig := <-o.Signals:
			cmd.Process.Signal(sig)
		}
	}

	// Renew while the command runs. A call never outlasts a renewal period,
	// so that a stalled gateway delays neither the next try nor a signal
	// for long.
	var renew <-chan time.Time
	renewTimeout := min(o.CallTimeout, max(o.TTL/3, 100*time.Millisecond))
	if o.TTL > 0 {
		t := time.NewTicker(o.TTL / 3)
		defer t.Stop()
		renew = t.C
	}
	for running := true; running; {
		select {
		case <-done:
			running = false
		case sig := <-o.Signals:
			o.Log.Info("forwarding signal", "signal", sig)
			cmd.Process.Signal(sig)
		case <-renew:
			cctx, cancel := context.WithTimeout(ctx, renewTimeout)
			_, err := o.Client.Renew(cctx, control.RenewRequest{Name: o.Register.Name, IP: o.Register.IP, Port: o.Register.Port})
			cancel()
			var apiErr *control.APIError
			switch {
			case err == nil:
			case errors.As(err, &apiErr) && apiErr.Code == http.StatusNotFound:
				o.Log.Warn("lease lost; registering again", "err", err)
				if err := register(renewTimeout); err != nil {
					o.Log.Warn("register again failed; retrying at the next renewal", "err", err)
				}
			default:
				o.Log.Warn("renew failed; retrying", "err", err)
			}
		}
	}

	code := exitCode()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.CallTimeout)
	defer cancel()
	err := o.Client.Deregister(cctx, control.DeregisterRequest{Name: o.Register.Name, IP: o.Register.IP, Port: o.Register.Port})
	if err != nil {
		o.Log.Warn("deregister failed", "exit", code, "err", err)
	} else {
		o.Log.Info("command exited; deregistered", "exit", code)
	}
	return code, nil
}

// waitReady returns nil once addr accepts a TCP connection, polling every
// readyPoll, or ctx's error.
func waitReady(ctx context.Context, addr netip.AddrPort) error {
	var d net.Dialer
	for {
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		c, err := d.DialContext(dctx, "tcp", addr.String())
		cancel()
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(readyPoll):
		}
	}
}

// exitStatus is a finished command's exit status as a shell reports it:
// 128+N for a death by signal N.
func exitStatus(ps *os.ProcessState, err error) int {
	if ps == nil {
		if err != nil {
			return 1
		}
		return 0
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// portString formats an optional port for logs: "*" for every port.
func portString(p *int) string {
	if p == nil {
		return "*"
	}
	return strconv.Itoa(*p)
}
