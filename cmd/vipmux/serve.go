package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/vipmux/vipmux/config"
	"github.com/vipmux/vipmux/control"
	"github.com/vipmux/vipmux/dispatch"
	"github.com/vipmux/vipmux/health"
	"github.com/vipmux/vipmux/metrics"
	"github.com/vipmux/vipmux/nic"
	"github.com/vipmux/vipmux/registry"
	"github.com/vipmux/vipmux/stack"
)

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "run the gateway in the foreground",
		Description: `Reads the config, takes over (afpacket) or creates (tap) the front NIC,
restores the table from the state file, and serves until SIGINT or SIGTERM.
It needs CAP_NET_RAW and CAP_NET_ADMIN, not root: the systemd unit
vipmux.service runs it as user vipmux with just those two.

SIGHUP (or vipmux reload) re-reads the config file; see vipmux reload --help.

Examples:
   vipmux serve --config /etc/vipmux/vipmux.toml
   vipmux serve --config ./vipmux.toml --log-level debug --log-format json
   vipmux serve --config /etc/vipmux/vipmux.toml --pcap /tmp/front.pcap   # then: tcpdump -r /tmp/front.pcap -nn
   systemctl enable --now vipmux   # the same, as the service that make install installs`,
		Flags: []cli.Flag{
			&cli.PathFlag{Name: "config", Aliases: []string{"c"}, Value: "/etc/vipmux/vipmux.toml", Usage: "TOML config `FILE`", EnvVars: []string{"VIPMUX_CONFIG"}},
			&cli.StringFlag{Name: "log-level", Usage: "override [log] level: debug, info, warn, error"},
			&cli.StringFlag{Name: "log-format", Usage: "override [log] format: text or json"},
			&cli.PathFlag{Name: "pcap", Usage: "write the front NIC's frames (both ways) to `FILE` in pcap format, for tcpdump or Wireshark; created 0600, replaced if it exists"},
			&cli.StringFlag{Name: "pprof", Usage: "serve Go's profiler (/debug/pprof/) on `ADDR`, e.g. 127.0.0.1:6060; no authentication, keep it on loopback"},
			&cli.BoolFlag{Name: "reset-state", Usage: "start with an empty table: move the state file (corrupt or not) aside to FILE.corrupt-UNIXTIME, never deleting it"},
		},
		Action: func(c *cli.Context) error {
			cfg, err := config.Load(c.Path("config"))
			if err != nil {
				return err
			}
			// The flags win over the file, at start and on every reload.
			override := func(cfg *config.Config) {
				if v := c.String("log-level"); v != "" {
					cfg.Log.Level = v
				}
				if v := c.String("log-format"); v != "" {
					cfg.Log.Format = v
				}
			}
			override(cfg)
			if err := cfg.Validate(); err != nil {
				return err
			}
			logs := newLogSwitch(cfg.Log, c.App.ErrWriter)
			log := logs.Logger
			if addr := c.String("pprof"); addr != "" {
				stopPprof, err := startPprof(addr, log)
				if err != nil {
					return err
				}
				defer stopPprof()
			}
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			// SIGHUP reloads; it is caught from here on so that an early
			// one does not kill the gateway.
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			opts := serveOptions{reset: c.Bool("reset-state"), pcap: c.Path("pcap"), config: c.Path("config"), override: override, logs: logs, hup: hup}
			if err := serve(ctx, cfg, log, opts); err != nil {
				log.Error("gateway stopped", "err", err)
				return err
			}
			log.Info("gateway stopped")
			return nil
		},
	}
}

// serveOptions are serve's flags and what reloading needs.
type serveOptions struct {
	// reset moves an existing state file aside first: the table starts
	// empty.
	reset bool
	// pcap, when not empty, is the file that the front NIC's traffic is
	// written to.
	pcap string
	// config is the config file, re-read on SIGHUP (hup) and
	// POST /v1/reload; override applies serve's flags to it; logs is the
	// logger that a reload adjusts.
	config   string
	override func(*config.Config)
	logs     *logSwitch
	hup      <-chan os.Signal
}

// serve wires the packages together and runs until ctx is done.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, opts serveOptions) error {
	token := ""
	if cfg.Control.TokenFile != "" {
		t, err := control.ReadTokenFile(cfg.Control.TokenFile)
		if err != nil {
			return fmt.Errorf("control.token_file: %w", err)
		}
		token = t
	}
	store := &registry.FileStore{Path: cfg.State.Path}
	defer store.Close()
	if opts.reset {
		moved, err := store.MoveAside(time.Now())
		if err != nil {
			return fmt.Errorf("--reset-state: %w", err)
		}
		if moved != "" {
			log.Warn("--reset-state: starting with an empty table; the old state file is kept", "state", cfg.State.Path, "moved_to", moved)
		}
	}
	reg, err := registry.New(registry.Options{
		Networks: cfg.NIC.Networks,
		Store:    store,
		Failback: cfg.Health.Failback,
		Logger:   log,
	})
	if err != nil {
		// The file is left exactly as it was: it may be all that is left
		// of the table.
		return fmt.Errorf("state.path %s: %w; the file is left unchanged: repair it, or run serve --reset-state to move it aside and start with an empty table", cfg.State.Path, err)
	}
	// Listen before touching the NIC: a port in use is the commonest
	// mistake and should change nothing.
	ln, err := net.Listen("tcp", cfg.Control.Listen)
	if err != nil {
		return fmt.Errorf("control.listen: %w", err)
	}
	defer ln.Close()
	pcap, err := createPcap(opts.pcap, log)
	if err != nil {
		return err
	}
	defer pcap.close() // after the stack has stopped
	mln, err := listenMetrics(cfg.Metrics)
	if err != nil {
		return err
	}
	if mln != nil {
		defer mln.Close()
	}

	link, err := nic.Open(nic.Options{
		Driver:    cfg.NIC.Driver,
		Interface: cfg.NIC.Interface,
		MAC:       cfg.NIC.MAC,
		MTU:       uint32(cfg.NIC.MTU),
		Offload:   cfg.NIC.Offload,
		Logger:    log,
	})
	if err != nil {
		return err
	}
	defer link.Close()
	front, err := pcap.wrap(link.Endpoint)
	if err != nil {
		return err
	}
	var static []netip.Addr
	if cfg.Shared.Address.IsValid() {
		static = append(static, cfg.Shared.Address)
	}
	st, err := stack.New(stack.Options{
		Link:         front,
		Networks:     cfg.NIC.Networks,
		Router:       cfg.NIC.Router,
		Static:       static,
		TimeWait:     cfg.Dispatch.TimeWait.Duration,
		DelayedAck:   cfg.Dispatch.DelayedAck.Duration,
		GARPCount:    cfg.ARP.GARPCount,
		GARPInterval: cfg.ARP.GARPInterval.Duration,
		DADProbes:    cfg.ARP.DADProbes,
		DADInterval:  cfg.ARP.DADInterval.Duration,
		// The restored table's addresses were the gateway's before the
		// restart: announced again, not probed.
		Restored: slices.Collect(maps.Keys(reg.Table().Addrs())),
		Logger:   log,
	})
	if err != nil {
		return err
	}
	defer st.Close()
	if err := reg.SetApplier(st); err != nil {
		return err
	}
	// The checker exists even while [health] enabled = false, so that a
	// reload can turn it on. It also hears of the forwarder's failed dials
	// (passive checking); they are ignored while it does not run.
	hc, err := newHealthChecker(cfg.Health, reg, log)
	if err != nil {
		return err
	}
	fwd := dispatch.New(dispatch.Options{Table: reg, DialTimeout: cfg.Dispatch.DialTimeout.Duration, Logger: log, Observer: hc})
	defer fwd.Close()
	reg.Watch(fwd.Prune)
	st.HandleTCP(cfg.Dispatch.MaxInFlight, fwd.Handle)
	mtr, err := metrics.New(metrics.Options{Table: reg, Conns: fwd, Stack: st, Logger: log})
	if err != nil {
		return err
	}
	reg.Watch(mtr.Watch) // counts and logs switches and failovers

	// Leases end within expiryInterval of running out. The loop is serve's:
	// it stops (cancel, then wait) before the stack and dispatch close.
	expiryCtx, stopExpiry := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { reg.RunExpiry(expiryCtx, expiryInterval) })
	defer wg.Wait()
	defer stopExpiry()
	hr := &healthRunner{ctx: ctx, hc: hc}
	if cfg.Health.Enabled {
		hr.start()
	}
	defer hr.stop()
	rl := newReloader(opts.config, opts.override, cfg, opts.logs, reg, st, fwd, hr)
	reloadCtx, stopReload := context.WithCancel(ctx)
	wg.Go(func() { rl.run(reloadCtx, opts.hup) })
	defer stopReload()

	if mln != nil {
		metricsCtx, stopMetrics := context.WithCancel(ctx)
		defer stopMetrics()
		wg.Go(func() { serveMetrics(metricsCtx, mln, mtr.Handler(), log) })
	}

	h, err := control.NewHandler(control.Options{Registry: reg, Shared: cfg.Shared.Address, SharedFunc: rl.Shared, Token: token, Conns: fwd, Reload: rl.Reload, Metrics: mtr.Handler(), Logger: log})
	if err != nil {
		return err
	}
	log.Info("gateway serving", "nic", link.Name, "driver", cfg.NIC.Driver, "mac", link.MAC.String(), "mtu", link.MTU,
		"networks", fmt.Sprint(cfg.NIC.Networks), "shared", cfg.Shared.Address, "bindings", reg.Table().Len(), "control", ln.Addr().String())
	err = control.Serve(ctx, ln, h)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	// What follows (deferred) ends the proxied connections, releases the
	// addresses and the NIC.
	log.Info("gateway stopping", "proxied_connections", fwd.Active())
	return err
}

// newHealthChecker returns the checker of mode-2 members that cfg
// describes; cfg has been validated.
func newHealthChecker(cfg config.Health, reg *registry.Registry, log *slog.Logger) (*health.Checker, error) {
	defaults, ports := healthSettings(cfg)
	hc, err := health.New(health.Options{
		Registry: reg,
		Defaults: defaults,
		Ports:    ports,
		Logger:   log,
	})
	if err != nil {
		return nil, fmt.Errorf("[health]: %w", err)
	}
	return hc, nil
}

// expiryInterval is how often serve ends the leases that ran out.
const expiryInterval = 100 * time.Millisecond
