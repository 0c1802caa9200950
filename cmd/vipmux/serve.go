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
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/vipmux/vipmux/config"
	"github.com/vipmux/vipmux/control"
	"github.com/vipmux/vipmux/dispatch"
	"github.com/vipmux/vipmux/health"
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

Example:
   vipmux serve --config /etc/vipmux/vipmux.toml`,
		Flags: []cli.Flag{
			&cli.PathFlag{Name: "config", Aliases: []string{"c"}, Value: "/etc/vipmux/vipmux.toml", Usage: "TOML config `FILE`", EnvVars: []string{"VIPMUX_CONFIG"}},
			&cli.StringFlag{Name: "log-level", Usage: "override [log] level: debug, info, warn, error"},
			&cli.StringFlag{Name: "log-format", Usage: "override [log] format: text or json"},
			&cli.StringFlag{Name: "pprof", Usage: "serve Go's profiler (/debug/pprof/) on `ADDR`, e.g. 127.0.0.1:6060; no authentication, keep it on loopback"},
			&cli.BoolFlag{Name: "reset-state", Usage: "start with an empty table: move the state file (corrupt or not) aside to FILE.corrupt-UNIXTIME, never deleting it"},
		},
		Action: func(c *cli.Context) error {
			cfg, err := config.Load(c.Path("config"))
			if err != nil {
				return err
			}
			if v := c.String("log-level"); v != "" {
				cfg.Log.Level = v
			}
			if v := c.String("log-format"); v != "" {
				cfg.Log.Format = v
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			log := newLogger(cfg.Log, c.App.ErrWriter)
			setGCPercent()
			if addr := c.String("pprof"); addr != "" {
				stopPprof, err := startPprof(addr, log)
				if err != nil {
					return err
				}
				defer stopPprof()
			}
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			if err := serve(ctx, cfg, log, c.Bool("reset-state")); err != nil {
				log.Error("gateway stopped", "err", err)
				return err
			}
			log.Info("gateway stopped")
			return nil
		},
	}
}

// serve wires the packages together and runs until ctx is done. With
// resetState, an existing state file is moved aside first and the table
// starts empty.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, resetState bool) error {
	token := ""
	if cfg.Control.TokenFile != "" {
		t, err := control.ReadTokenFile(cfg.Control.TokenFile)
		if err != nil {
			return fmt.Errorf("control.token_file: %w", err)
		}
		token = t
	}
	store := &registry.FileStore{Path: cfg.State.Path}
	if resetState {
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
	var static []netip.Addr
	if cfg.Shared.Address.IsValid() {
		static = append(static, cfg.Shared.Address)
	}
	st, err := stack.New(stack.Options{
		Link:         link.Endpoint,
		Networks:     cfg.NIC.Networks,
		Router:       cfg.NIC.Router,
		Static:       static,
		TimeWait:     cfg.Dispatch.TimeWait.Duration,
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
	fwd := dispatch.New(dispatch.Options{Table: reg, DialTimeout: cfg.Dispatch.DialTimeout.Duration, Logger: log})
	defer fwd.Close()
	reg.Watch(fwd.Prune)
	st.HandleTCP(cfg.Dispatch.MaxInFlight, fwd.Handle)

	// Leases end within expiryInterval of running out. The loop is serve's:
	// it stops (cancel, then wait) before the stack and dispatch close.
	expiryCtx, stopExpiry := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { reg.RunExpiry(expiryCtx, expiryInterval) })
	defer wg.Wait()
	defer stopExpiry()
	if cfg.Health.Enabled {
		hc, err := newHealthChecker(cfg.Health, reg, log)
		if err != nil {
			return err
		}
		healthCtx, stopHealth := context.WithCancel(ctx)
		defer stopHealth()
		wg.Go(func() { _ = hc.Run(healthCtx) })
	}

	h, err := control.NewHandler(control.Options{Registry: reg, Shared: cfg.Shared.Address, Token: token, Conns: fwd, Logger: log})
	if err != nil {
		return err
	}
	log.Info("gateway serving", "nic", link.Name, "driver", cfg.NIC.Driver, "mac", link.MAC.String(), "mtu", link.MTU,
		"networks", fmt.Sprint(cfg.NIC.Networks), "shared", cfg.Shared.Address, "bindings", reg.Table().Len(), "control", ln.Addr().String())
	err = control.Serve(ctx, ln, h)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// newHealthChecker returns the checker of mode-2 members that cfg
// describes; cfg has been validated.
func newHealthChecker(cfg config.Health, reg *registry.Registry, log *slog.Logger) (*health.Checker, error) {
	settings := func(interval, timeout config.Duration, rise, fall int) health.Settings {
		return health.Settings{Interval: interval.Duration, Timeout: timeout.Duration, Rise: rise, Fall: fall}
	}
	ports := make(map[uint16]health.Settings, len(cfg.Port))
	for port, p := range cfg.Port {
		ports[port] = settings(p.Interval, p.Timeout, p.Rise, p.Fall)
	}
	hc, err := health.New(health.Options{
		Registry: reg,
		Defaults: settings(cfg.Interval, cfg.Timeout, cfg.Rise, cfg.Fall),
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

// newLogger returns the process's logger; cfg has been validated.
func newLogger(cfg config.Log, w interface{ Write([]byte) (int, error) }) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(strings.ToUpper(cfg.Level)))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
