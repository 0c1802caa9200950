package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vipmux/vipmux/config"
	"github.com/vipmux/vipmux/health"
	"github.com/vipmux/vipmux/notify"
	"github.com/vipmux/vipmux/registry"
	"github.com/vipmux/vipmux/stack"
)

// ReloadErrorKind says why a reload was refused.
type ReloadErrorKind int

const (
	// ReloadInvalid: the configuration does not parse or validate.
	ReloadInvalid ReloadErrorKind = iota + 1
	// ReloadConflict: the configuration is valid but cannot be applied
	// while the gateway runs (a key fixed at start-up changed, or the
	// shared address would move from under its bindings).
	ReloadConflict
)

// String returns "invalid" or "conflict".
func (k ReloadErrorKind) String() string {
	switch k {
	case ReloadInvalid:
		return "invalid"
	case ReloadConflict:
		return "conflict"
	}
	return fmt.Sprintf("ReloadErrorKind(%d)", int(k))
}

// ReloadError is a refused reload: nothing of the new configuration was
// applied, the one in force stays.
type ReloadError struct {
	// Key is the first config key at fault, as the file spells it
	// ("health.rise"), or "config" for a file that does not parse.
	Key string
	// Kind says why the reload was refused.
	Kind ReloadErrorKind
	// Msg is the whole explanation; it names every key at fault.
	Msg string
}

// Error implements error; it returns Msg, which names the keys.
func (e *ReloadError) Error() string { return e.Msg }

// Is makes errors.Is(err, registry.ErrInvalid) true of a ReloadInvalid
// and errors.Is(err, registry.ErrConflict) of a ReloadConflict: the
// control API answers them with 400 and 409, as it does the registry's
// errors.
func (e *ReloadError) Is(target error) bool {
	switch e.Kind {
	case ReloadInvalid:
		return target == registry.ErrInvalid
	case ReloadConflict:
		return target == registry.ErrConflict
	}
	return false
}

// Field is Key (control.FieldNamer): the control API, which cannot
// import this package, names the key at fault in its JSON answer.
func (e *ReloadError) Field() string { return e.Key }

// refusal is a refused reload of kind: the first key that err names (or
// key), and every problem.
func refusal(kind ReloadErrorKind, key string, err error) *ReloadError {
	var ke *config.KeyError
	if errors.As(err, &ke) {
		key = ke.Key
	}
	return &ReloadError{Key: key, Kind: kind, Msg: err.Error()}
}

// Reread reads the configuration again through Options.Load and applies
// it as Reload does; by says who asked ("SIGHUP", "api"), for the log. A
// configuration that Load cannot read is a ReloadInvalid.
func (g *Gateway) Reread(by string) (changed []string, err error) {
	if g.reloading != nil {
		done := g.reloading()
		defer func() { done(err) }()
	}
	if g.load == nil {
		return nil, g.refused(by, &ReloadError{Key: "config", Kind: ReloadConflict, Msg: "this gateway was not given a way to read its configuration again"})
	}
	next, err := g.load()
	if err != nil {
		return nil, g.refused(by, refusal(ReloadInvalid, "config", err))
	}
	return g.reload(by, next)
}

// Reload applies next, a configuration read again, to the running
// gateway, all or nothing, and returns the keys that changed, sorted. It
// logs one line with the outcome either way. Established connections are
// untouched. A refused reload is a *ReloadError naming the first key at
// fault; after Close, Reload returns ErrClosed.
func (g *Gateway) Reload(next *config.Config) (changed []string, err error) {
	return g.reload("", next)
}

// reload is Reload; by says who asked, for the log.
func (g *Gateway) reload(by string, next *config.Config) ([]string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, fmt.Errorf("reload: %w", ErrClosed)
	}
	changes, err := g.reloadLocked(next)
	if err != nil {
		return nil, g.refused(by, err)
	}
	defer func() {
		if len(changes) > 0 {
			g.ntf.Send(notify.Event{Kind: notify.Reload, Why: strings.Join(changedKeys(changes), ", ")})
		}
	}()
	g.mtr.Reloaded(nil, time.Now())
	keys := make([]string, len(changes))
	lines := make([]string, len(changes))
	for i, c := range changes {
		keys[i], lines[i] = c.Key, c.String()
	}
	attrs := []any{"config", g.path}
	if by != "" {
		attrs = append(attrs, "by", by)
	}
	if len(changes) == 0 {
		g.log.Info("config reloaded: nothing changed", attrs...)
	} else {
		g.log.Info("config reloaded", append(attrs, "changed", strings.Join(lines, "; "))...)
	}
	return keys, nil
}

// refused logs and counts a refused reload and returns err.
func (g *Gateway) refused(by string, err error) error {
	g.mtr.Reloaded(err, time.Now())
	attrs := []any{"config", g.path}
	if by != "" {
		attrs = append(attrs, "by", by)
	}
	g.log.Error("reload refused: the configuration in force stays as it was", append(attrs, "err", err.Error())...)
	if g.ntf != nil {
		g.ntf.Send(notify.Event{Kind: notify.ReloadRefused, Why: err.Error()})
	}
	return err
}

// reloadLocked checks and applies next; g.mu is held.
func (g *Gateway) reloadLocked(next *config.Config) ([]config.Change, error) {
	if next == nil {
		return nil, &ReloadError{Key: "config", Kind: ReloadInvalid, Msg: "no configuration given"}
	}
	if err := next.Validate(); err != nil {
		return nil, refusal(ReloadInvalid, "config", err)
	}
	changes, err := g.cfg.Changes(next)
	if err != nil {
		return nil, refusal(ReloadConflict, "config", err)
	}
	// The token file is read again, so that rotating the token needs no
	// restart; a file that cannot be read refuses the whole reload.
	token, err := readToken(next.Control.TokenFile)
	if err != nil {
		return nil, &ReloadError{Key: "control.token_file", Kind: ReloadInvalid, Msg: err.Error() + ": the token in force stays"}
	}
	// So are the certificate and key: a renewed certificate needs no
	// restart either.
	cert, err := readCert(next.Control)
	if err != nil {
		return nil, &ReloadError{Key: "control.tls_cert", Kind: ReloadInvalid, Msg: err.Error() + ": the certificate in force stays"}
	}
	if old := g.cert.Load(); cert != nil && old != nil && !slices.EqualFunc(cert.Certificate, old.Certificate, bytes.Equal) {
		changes = append(changes, config.Change{Key: "control.tls_cert", Old: "the certificate in force", New: "the certificate now in " + next.Control.TLSCert})
	}
	if token != *g.token.Load() {
		changes = append(changes, config.Change{Key: "control.token_file", Old: "the token in force", New: "the token now in " + next.Control.TokenFile})
	}
	slices.SortFunc(changes, func(a, b config.Change) int { return strings.Compare(a.Key, b.Key) })
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
		return nil, refusal(ReloadInvalid, "health", err)
	}
	if changed("shared.address") {
		if err := g.checkShared(next.Shared.Address); err != nil {
			return nil, err
		}
	}
	steps := []struct {
		key   string
		apply func(*config.Config) error
	}{
		{"shared.address", g.applyShared},
		{"arp", func(c *config.Config) error {
			return g.st.SetARP(stack.ARPSettings{
				GARPCount: c.ARP.GARPCount, GARPInterval: c.ARP.GARPInterval.Duration,
				DADProbes: c.ARP.DADProbes, DADInterval: c.ARP.DADInterval.Duration,
				Refresh: c.ARP.Refresh.Duration,
			})
		}},
		{"dispatch.time_wait", func(c *config.Config) error { return g.st.SetTimeWait(c.Dispatch.TimeWait.Duration) }},
		{"dispatch.delayed_ack", func(c *config.Config) error { return g.st.SetDelayedAck(c.Dispatch.DelayedAck.Duration) }},
		{"dispatch.dial_timeout", func(c *config.Config) error { g.fwd.SetDialTimeout(c.Dispatch.DialTimeout.Duration); return nil }},
		{"notify", func(c *config.Config) error { g.ntf.Set(notifySettings(c.Notify)); return nil }},
		{"dispatch", func(c *config.Config) error { g.fwd.SetLimits(dispatchLimits(c.Dispatch)); return nil }},
		{"health", g.applyHealth},
		{"log", func(c *config.Config) error {
			if g.setLog != nil {
				g.setLog(c.Log)
			}
			return nil
		}},
	}
	for i, s := range steps {
		if !changed(s.key) {
			continue
		}
		if err := s.apply(next); err != nil {
			for _, u := range slices.Backward(steps[:i]) {
				if changed(u.key) {
					if uerr := u.apply(g.cfg); uerr != nil {
						g.log.Error("reload: undo", "key", u.key, "err", uerr)
					}
				}
			}
			return nil, fmt.Errorf("reload: apply %s: %w", s.key, err)
		}
	}
	g.cfg = next
	g.token.Store(&token)
	g.cert.Store(cert)
	return changes, nil
}

// checkShared refuses a new shared address while the old one has
// bindings: their members registered on it, and moving them would break
// what they were told. Deregister them first (or keep the address).
func (g *Gateway) checkShared(next netip.Addr) error {
	// A member's backend may not become a front address: its connections
	// would come back into the gateway.
	for _, b := range g.reg.Table().Bindings() {
		for _, m := range b.Members {
			if next.IsValid() && m.Backend.Addr().Unmap() == next {
				return &ReloadError{Key: "shared.address", Kind: ReloadConflict, Msg: fmt.Sprintf(
					"cannot make %s the shared address: it is the backend of member %s of binding %s; change that backend first",
					next, m.Name, b.Key)}
			}
		}
	}
	old := g.cfg.Shared.Address
	if !old.IsValid() {
		return nil
	}
	var ports []string
	for _, b := range g.reg.Table().Bindings() {
		if b.IP == old {
			ports = append(ports, registry.Key{IP: b.IP, Port: b.Port}.String())
		}
	}
	if len(ports) == 0 {
		return nil
	}
	return &ReloadError{Key: "shared.address", Kind: ReloadConflict, Msg: fmt.Sprintf(
		"cannot move the shared address from %s to %s while it has bindings (%s): deregister their members first, or keep the address",
		old, formatAddr(next), strings.Join(ports, ", "))}
}

// applyShared makes c's shared address the one the stack holds and the
// control API means.
func (g *Gateway) applyShared(c *config.Config) error {
	if err := g.st.SetStatic(staticAddrs(c)); err != nil {
		return err
	}
	g.shared.Store(c.Shared.Address)
	return nil
}

// applyHealth applies c's [health] section: settings, failback, and
// checks on or off.
func (g *Gateway) applyHealth(c *config.Config) error {
	defaults, ports := healthSettings(c.Health)
	if err := g.hc.Update(defaults, ports); err != nil {
		return err
	}
	g.reg.SetFailback(c.Health.Failback)
	if c.Health.Enabled {
		g.health.start(g.ctx, &g.wg)
		return nil
	}
	if g.health.stop() {
		n, err := health.Release(g.reg)
		if err != nil {
			g.log.Error("health checks disabled: bring up members marked down", "err", err)
		} else if n > 0 {
			g.log.Info("health checks disabled: members they had marked down are up again", "members", n)
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

// atomicAddr is a netip.Addr read without locks.
type atomicAddr struct{ p atomic.Pointer[netip.Addr] }

// Load returns the address stored last (the zero Addr before the first
// Store).
func (a *atomicAddr) Load() netip.Addr {
	if p := a.p.Load(); p != nil {
		return *p
	}
	return netip.Addr{}
}

// Store makes addr the address that Load returns.
func (a *atomicAddr) Store(addr netip.Addr) { a.p.Store(&addr) }

// changedKeys are the keys of changes.
func changedKeys(changes []config.Change) []string {
	keys := make([]string, len(changes))
	for i, c := range changes {
		keys[i] = c.Key
	}
	return keys
}
