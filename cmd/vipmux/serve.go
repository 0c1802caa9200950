package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/vipmux/vipmux/config"
	"github.com/vipmux/vipmux/internal/sdnotify"
	// Aliased: the tests of package main have a fake control API named gateway.
	vipgateway "github.com/vipmux/vipmux/gateway"
	"github.com/vipmux/vipmux/nic"
	"github.com/vipmux/vipmux/registry"
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
			&cli.StringFlag{Name: "log-level", Usage: "override [log] level with `LEVEL`: debug, info, warn, error"},
			&cli.StringFlag{Name: "log-format", Usage: "override [log] format with `FORMAT`: text or json"},
			&cli.PathFlag{Name: "pcap", Usage: "write the front NIC's frames (both ways) to `FILE` in pcap format, for tcpdump or Wireshark; created 0600, replaced if it exists"},
			&cli.StringFlag{Name: "pprof", Usage: "serve Go's profiler (/debug/pprof/) on `ADDR`, e.g. 127.0.0.1:6060; no authentication, keep it on loopback"},
			&cli.BoolFlag{Name: "reset-state", Usage: "start with an empty table: move the state file (corrupt or not) aside to FILE.corrupt-UNIXTIME, never deleting it"},
		},
		Action: func(c *cli.Context) error {
			path := c.Path("config")
			// The flags win over the file, at start and on every reload.
			load := func() (*config.Config, error) {
				cfg, err := config.Load(path)
				if err != nil {
					return nil, err
				}
				if v := c.String("log-level"); v != "" {
					cfg.Log.Level = v
				}
				if v := c.String("log-format"); v != "" {
					cfg.Log.Format = v
				}
				return cfg, cfg.Validate()
			}
			cfg, err := load()
			if err != nil {
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
			opts := serveOptions{reset: c.Bool("reset-state"), pcap: c.Path("pcap"), config: path, load: load, logs: logs, hup: hup}
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
	// config is the config file; load reads it again (with serve's flags
	// applied) on SIGHUP (hup) and POST /v1/reload; logs is the logger
	// that a reload adjusts.
	config string
	load   func() (*config.Config, error)
	logs   *logSwitch
	hup    <-chan os.Signal
}

// serve runs the gateway that cfg describes until ctx is done: it prepares
// what the flags ask for (the state file moved aside, the capture file),
// hands the rest to gateway.New, reloads on every SIGHUP, and closes the
// gateway.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, opts serveOptions) error {
	store := &registry.FileStore{Path: cfg.State.Path}
	// Before anything else, --reset-state included: a second gateway on
	// the same state path must change nothing. The gateway's Close
	// releases it (the store is its io.Closer), the process's end too.
	// With [cluster] the table is etcd's and the state file is not used:
	// nothing to lock.
	if !cfg.Cluster.Enabled() {
		if err := store.Lock(); err != nil {
			return fmt.Errorf("state.path: %w; stop the other gateway, or give this one a state.path of its own", err)
		}
	}
	if opts.reset {
		moved, err := store.MoveAside(time.Now())
		if err != nil {
			return fmt.Errorf("--reset-state: %w", err)
		}
		if moved != "" {
			log.Warn("--reset-state: starting with an empty table; the old state file is kept", "state", cfg.State.Path, "moved_to", moved)
		}
	}
	gopts := vipgateway.Options{Config: cfg, ConfigPath: opts.config, Load: opts.load, Store: store, Logger: log, SetLog: opts.logs.Set, Context: ctx,
		Version: buildVersion(), Revision: buildRevision()}
	sd := sdnotify.FromEnv()
	gopts.Reloading = systemdReloading(sd, log)
	if opts.pcap != "" {
		gopts.OpenCapture = func() (io.Writer, error) {
			f, err := createPcap(opts.pcap)
			if err != nil {
				return nil, err
			}
			log.Info("capturing the front NIC's frames", "pcap", opts.pcap, "snaplen", nic.DefaultSnapLen)
			return f, nil
		}
	}
	gw, err := vipgateway.New(gopts)
	if err != nil {
		return err
	}
	// The SIGHUP loop is serve's: it ends before the gateway closes.
	hupCtx, stopHup := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-hupCtx.Done():
				return
			case <-opts.hup:
				_, _ = gw.Reread("SIGHUP") // the gateway logs the outcome
			}
		}
	})
	// Ready: the NIC is open, the table restored and the control API's
	// listener open (gateway.New); Run serves it from now on.
	notifyLogged(log, sd.Ready("serving on "+gw.ControlAddr().String()))
	err = gw.Run(ctx)
	notifyLogged(log, sd.Stopping("stopping"))
	stopHup()
	wg.Wait()
	// What went wrong in the teardown (an incomplete capture, say) is
	// logged; it does not change how serve ends.
	if cerr := gw.Close(); cerr != nil {
		log.Error("gateway: close", "err", cerr)
	}
	return err
}

// systemdReloading returns the gateway's Reloading hook for sd: RELOADING=1
// (with MONOTONIC_USEC) when a reload begins and READY=1 when it ends,
// with a STATUS= line that says whether it was applied. Nil outside
// systemd.
func systemdReloading(sd *sdnotify.Notifier, log *slog.Logger) func() func(error) {
	if !sd.Enabled() {
		return nil
	}
	return func() func(error) {
		done, err := sd.Reloading()
		notifyLogged(log, err)
		return func(rerr error) {
			status := "serving; config reloaded"
			if rerr != nil {
				status = "serving; reload refused: " + rerr.Error()
			}
			notifyLogged(log, done(status))
		}
	}
}

// notifyLogged logs a failure to tell systemd: the gateway goes on, and
// systemd's own timeouts say the rest.
func notifyLogged(log *slog.Logger, err error) {
	if err != nil {
		log.Warn("cannot notify systemd", "err", err)
	}
}
