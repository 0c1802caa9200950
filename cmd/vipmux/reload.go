package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/urfave/cli/v2"
	"github.com/vipmux/vipmux/config"
	"github.com/vipmux/vipmux/control"
	"github.com/vipmux/vipmux/dispatch"
	"github.com/vipmux/vipmux/health"
	"github.com/vipmux/vipmux/registry"
	"github.com/vipmux/vipmux/stack"
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
				return fmt.Errorf("reload refused (%d %s): %s", ae.Code, http.StatusText(ae.Code), ae.Message)
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

// reloader applies a re-read config file to the running gateway. It owns
// the configuration in force; Reload is safe for concurrent use (reloads
// run one at a time).
type reloader struct {
	// path is the config file; override applies serve's flags
	// (--log-level, --log-format) to every file read, so that they keep
	// winning over the file.
	path     string
	override func(*config.Config)
	log      *slog.Logger
	logs     *logSwitch
	reg      *registry.Registry
	st       *stack.Stack
	fwd      *dispatch.Forwarder
	health   *healthRunner

	// shared is [shared] address in force, for the control API.
	shared atomic.Pointer[netip.Addr]

	// mu serializes reloads and guards cfg.
	mu  sync.Mutex
	cfg *config.Config
}

// newReloader returns the reloader of a gateway started with cfg.
func newReloader(path string, override func(*config.Config), cfg *config.Config, logs *logSwitch, reg *registry.Registry, st *stack.Stack, fwd *dispatch.Forwarder, hr *healthRunner) *reloader {
	r := &reloader{path: path, override: override, log: logs.Logger, logs: logs, reg: reg, st: st, fwd: fwd, health: hr, cfg: cfg}
	a := cfg.Shared.Address
	r.shared.Store(&a)
	return r
}

// Shared returns [shared] address in force (control.Options.SharedFunc).
func (r *reloader) Shared() netip.Addr { return *r.shared.Load() }

// run reloads on every signal on hup until ctx is done.
func (r *reloader) run(ctx context.Context, hup <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			_, _ = r.reload("SIGHUP")
		}
	}
}

// Reload re-reads the config file and applies what changed, all or
// nothing; it returns the keys that changed (control.Options.Reload). It
// logs one line with the outcome either way. A refused reload is a
// *registry.FieldError naming the first key at fault: ErrInvalid for a
// file that does not parse or validate, ErrConflict for a change that
// cannot be made while the gateway runs.
func (r *reloader) Reload(context.Context) ([]string, error) {
	return r.reload("api")
}

// reload is Reload; by says who asked, for the log.
func (r *reloader) reload(by string) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	changes, err := r.reloadLocked()
	if err != nil {
		msg := err.Error()
		if fe := (*registry.FieldError)(nil); errors.As(err, &fe) {
			msg = fe.Msg // the problems name their keys
		}
		r.log.Error("reload refused: the configuration in force stays as it was", "config", r.path, "by", by, "err", msg)
		return nil, err
	}
	keys := make([]string, len(changes))
	lines := make([]string, len(changes))
	for i, c := range changes {
		keys[i], lines[i] = c.Key, c.String()
	}
	if len(changes) == 0 {
		r.log.Info("config reloaded: nothing changed", "config", r.path, "by", by)
	} else {
		r.log.Info("config reloaded", "config", r.path, "by", by, "changed", strings.Join(lines, "; "))
	}
	return keys, nil
}

// reloadLocked reads, checks and applies the file; r.mu is held.
func (r *reloader) reloadLocked() ([]config.Change, error) {
	next, err := config.Load(r.path)
	if err == nil {
		r.override(next)
		err = next.Validate()
	}
	if err != nil {
		return nil, refusal(registry.ErrInvalid, "config", err)
	}
	changes, err := r.cfg.Changes(next)
	if err != nil {
		return nil, refusal(registry.ErrConflict, "config", err)
	}
	if len(changes) == 0 {
		return nil, nil
	}
	changed := func(prefix string) bool {
		return slices.ContainsFunc(changes, func(c config.Change) bool {
			return c.Key == prefix || strings.HasPrefix(c.Key, prefix+".")
		})
	}
	// Every check comes before the first change; the steps that can fail
	// come first, and each that fails undoes the ones before it by
	// applying the old configuration again.
	defaults, ports := healthSettings(next.Health)
	if err := health.Check(defaults, ports); err != nil {
		return nil, refusal(registry.ErrInvalid, "health", err)
	}
	if changed("shared.address") {
		if err := r.checkShared(next.Shared.Address); err != nil {
			return nil, err
		}
	}
	steps := []struct {
		key   string
		apply func(*config.Config) error
	}{
		{"shared.address", r.applyShared},
		{"arp", func(c *config.Config) error {
			return r.st.SetARP(stack.ARPSettings{
				GARPCount: c.ARP.GARPCount, GARPInterval: c.ARP.GARPInterval.Duration,
				DADProbes: c.ARP.DADProbes, DADInterval: c.ARP.DADInterval.Duration,
			})
		}},
		{"dispatch.time_wait", func(c *config.Config) error { return r.st.SetTimeWait(c.Dispatch.TimeWait.Duration) }},
		{"dispatch.delayed_ack", func(c *config.Config) error { return r.st.SetDelayedAck(c.Dispatch.DelayedAck.Duration) }},
		{"dispatch.dial_timeout", func(c *config.Config) error { r.fwd.SetDialTimeout(c.Dispatch.DialTimeout.Duration); return nil }},
		{"health", r.applyHealth},
		{"log", func(c *config.Config) error { r.logs.Set(c.Log); return nil }},
	}
	for i, s := range steps {
		if !changed(s.key) {
			continue
		}
		if err := s.apply(next); err != nil {
			for _, u := range slices.Backward(steps[:i]) {
				if changed(u.key) {
					if uerr := u.apply(r.cfg); uerr != nil {
						r.log.Error("reload: undo", "key", u.key, "err", uerr)
					}
				}
			}
			return nil, fmt.Errorf("reload: apply %s: %w", s.key, err)
		}
	}
	r.cfg = next
	return changes, nil
}

// refusal is a refused reload as the control API reports it: kind, the
// first key that err names (or field), and every problem.
func refusal(kind error, field string, err error) error {
	var ke *config.KeyError
	if errors.As(err, &ke) {
		field = ke.Key
	}
	return &registry.FieldError{Field: field, Kind: kind, Msg: err.Error()}
}

// checkShared refuses a new shared address while the old one has
// bindings: their members registered on it, and moving them would break
// what they were told. Deregister them first (or keep the address).
func (r *reloader) checkShared(next netip.Addr) error {
	old := r.cfg.Shared.Address
	if !old.IsValid() {
		return nil
	}
	var ports []string
	for _, b := range r.reg.Table().Bindings() {
		if b.IP == old {
			ports = append(ports, registry.Key{IP: b.IP, Port: b.Port}.String())
		}
	}
	if len(ports) == 0 {
		return nil
	}
	return &registry.FieldError{Field: "shared.address", Kind: registry.ErrConflict, Msg: fmt.Sprintf(
		"cannot move the shared address from %s to %s while it has bindings (%s): deregister their members first, or keep the address",
		old, formatAddr(next), strings.Join(ports, ", "))}
}

// applyShared makes c's shared address the one the stack holds and the
// control API means.
func (r *reloader) applyShared(c *config.Config) error {
	var static []netip.Addr
	if c.Shared.Address.IsValid() {
		static = append(static, c.Shared.Address)
	}
	if err := r.st.SetStatic(static); err != nil {
		return err
	}
	a := c.Shared.Address
	r.shared.Store(&a)
	return nil
}

// applyHealth applies c's [health] section: settings, failback, and
// checks on or off.
func (r *reloader) applyHealth(c *config.Config) error {
	defaults, ports := healthSettings(c.Health)
	if err := r.health.hc.Update(defaults, ports); err != nil {
		return err
	}
	r.reg.SetFailback(c.Health.Failback)
	if c.Health.Enabled {
		r.health.start()
		return nil
	}
	if r.health.stop() {
		n, err := health.Release(r.reg)
		if err != nil {
			r.log.Error("health checks disabled: bring up members marked down", "err", err)
		} else if n > 0 {
			r.log.Info("health checks disabled: members they had marked down are up again", "members", n)
		}
	}
	return nil
}

// healthSettings are the health package's settings for cfg.
func healthSettings(cfg config.Health) (health.Settings, map[uint16]health.Settings) {
	settings := func(interval, timeout config.Duration, rise, fall int) health.Settings {
		return health.Settings{Interval: interval.Duration, Timeout: timeout.Duration, Rise: rise, Fall: fall}
	}
	ports := make(map[uint16]health.Settings, len(cfg.Port))
	for port, p := range cfg.Port {
		ports[port] = settings(p.Interval, p.Timeout, p.Rise, p.Fall)
	}
	return settings(cfg.Interval, cfg.Timeout, cfg.Rise, cfg.Fall), ports
}

// formatAddr is a, or "none" for the zero Addr.
func formatAddr(a netip.Addr) string {
	if !a.IsValid() {
		return "none"
	}
	return a.String()
}

// healthRunner runs a health.Checker while health checks are enabled. Its
// goroutine is the serve's: stop it before serve returns.
type healthRunner struct {
	ctx context.Context
	hc  *health.Checker

	// mu guards the following fields.
	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// start runs the checker unless it runs already.
func (h *healthRunner) start() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(h.ctx)
	done := make(chan struct{})
	h.cancel, h.done = cancel, done
	go func() {
		defer close(done)
		_ = h.hc.Run(ctx)
	}()
}

// stop stops the checker and waits for it; it reports whether it was
// running.
func (h *healthRunner) stop() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cancel == nil {
		return false
	}
	h.cancel()
	<-h.done
	h.cancel, h.done = nil, nil
	return true
}
