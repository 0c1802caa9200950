// Package registry is vipmux's single source of truth: the table of
// bindings, their members and the members' states.
//
// A binding is an (IP, port) pair; port 0 means "every port" (mode 1, one IP
// per server computer). A binding with a port (mode 2) has an ordered list of
// members, at most one of them active. Lookup on the hot path takes no lock:
// it reads an immutable Table published through an atomic pointer. Writes are
// serialized, persisted through a Store (group-committed: the changes that
// arrive during one save share the next), and announced synchronously to
// an Applier (the stack) before they become visible, so that a change that
// the stack or the disk cannot take is never half-applied. A change of
// states only (a switch, a failover) is routed by Lookup from the moment its
// save starts; it is acknowledged, shown by Table and reported to watchers
// only once durable, and undone if the save fails.
//
// The registry knows nothing of networking beyond net/netip values.
//
//	r, err := registry.New(registry.Options{Networks: nets, Store: store})
//	err = r.Register(registry.Registration{Name: "web-a", IP: ip, Backend: be})
//	m, key, ok := r.Lookup(ip, 8080)
package registry

import (
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"sync"
	"sync/atomic"
	"time"
)

// MaxNameLen is the longest server name accepted.
const MaxNameLen = 63

// nameRE is the documented character set of server names.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// ValidateName reports whether name is an acceptable server name: 1 to
// MaxNameLen characters from [A-Za-z0-9._-], starting with a letter or digit.
func ValidateName(name string) error {
	switch {
	case name == "":
		return Invalid("name", "must not be empty")
	case len(name) > MaxNameLen:
		return Invalid("name", "%d characters is longer than %d", len(name), MaxNameLen)
	case !nameRE.MatchString(name):
		return Invalid("name", "%q: use letters, digits, '.', '_' and '-', starting with a letter or digit", name)
	}
	return nil
}

// Applier makes the world follow the table (for the stack: hold the
// table's addresses), in two steps around the moment a change becomes
// visible.
type Applier interface {
	// Prepare acquires what next needs and prev does not (adds addresses)
	// before next is published; an error aborts the change.
	Prepare(prev, next *Table) error
	// Commit releases what prev had and next does not (removes addresses)
	// after next is published and every Watch function has run. The
	// registry also calls Commit(next, prev) to undo a Prepare whose change
	// could not be saved.
	Commit(prev, next *Table)
}

// Store persists the table. Save must not return before the table is
// durable.
type Store interface {
	Load() (*Table, error)
	Save(*Table) error
}

// Options configures a Registry.
type Options struct {
	// Networks are the on-link front subnets; every binding IP must lie in
	// one of them. Empty allows any IP.
	Networks []netip.Prefix
	// Store persists the table; nil keeps it in memory only.
	Store Store
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Failback makes a former active that automatic failover demoted
	// active again when its health check recovers. Off by default: no
	// flapping back.
	Failback bool
	// Logger receives one line per automatic change; nil discards.
	Logger *slog.Logger
	// FrontAddr reports whether ip is one of the gateway's own front
	// addresses outside the table (the gateway: [shared] address). A
	// backend may not be one, nor any address the table holds: the
	// member's connections would come back into the gateway. Nil: none.
	FrontAddr func(ip netip.Addr) bool
	// AllowLoopbackBackends accepts loopback backends, which are refused
	// otherwise: on a gateway, a backend of 127.0.0.1 forwards the front
	// LAN to the gateway's own host (its control API, metrics, pprof).
	// Only for tests whose backends are kernel listeners on loopback; a
	// serving gateway never sets it.
	AllowLoopbackBackends bool
	// ObserveSave, when not nil, is told how long each Store.Save took,
	// successful or not (the metrics' save histogram).
	ObserveSave func(time.Duration)
	// OnEvent, when not nil, is told of every automatic change as it is
	// recorded (see Events). It runs with the registry's lock held: it
	// must return at once and must not call the registry.
	OnEvent func(Event)
	// MaxBindings is the most bindings the table takes ([state]
	// max_bindings); zero means DefaultMaxBindings. A registration over it
	// is refused (ErrConflict); a restored table may hold more.
	MaxBindings int
	// MaxMembersPerPort is the most members of one port binding ([state]
	// max_members_per_port); zero means DefaultMaxMembersPerPort.
	MaxMembersPerPort int
}

// Table limits (Options.MaxBindings, Options.MaxMembersPerPort).
const (
	// DefaultMaxBindings is Options.MaxBindings' default.
	DefaultMaxBindings = 65536
	// MaxMaxBindings is the largest Options.MaxBindings that config takes.
	MaxMaxBindings = 1 << 20
	// DefaultMaxMembersPerPort is Options.MaxMembersPerPort's default.
	DefaultMaxMembersPerPort = 256
	// MaxMaxMembersPerPort is the largest Options.MaxMembersPerPort that
	// config takes.
	MaxMaxMembersPerPort = 65536
)

// Registry holds the table. Its methods are safe for concurrent use.
type Registry struct {
	opts Options
	now  func() time.Time
	log  *slog.Logger
	// snap is the newest durable table, or a newer one that holds
	// automatic changes whose save failed (see save): Table, watchers and
	// the applier's releases follow it.
	snap atomic.Pointer[Table]
	// route is the table that Lookup (the data path) reads: snap, or a
	// newer table that differs from it only in states (see routesEarly)
	// while that table is being saved.
	route atomic.Pointer[Table]

	// mu serializes writers and guards the following fields.
	mu sync.Mutex
	// pending is the newest table: snap plus the changes being saved.
	pending *Table
	// saving is true while a save runs; open collects the changes that
	// arrive meanwhile, for the next save.
	saving   bool
	open     *batch
	applier  Applier
	watchers []func(prev, next *Table)
	events   []Event
	// remote is the store revision of snap on a Remote store (remote.go).
	remote remoteView
	// staged are the events of the change being built (see buildLocked).
	staged []Event
	// unsaved is true while a failed save left automatic changes out of
	// the state file; saveFailures counts failed saves.
	unsaved      bool
	saveFailures atomic.Uint64
	// probing are the new addresses that the applier is probing for a
	// change, outside mu; each channel closes when its probe ends.
	probing map[netip.Addr]chan struct{}

	// arrMu guards arrivals: the renewals that arrived and wait for mu
	// (see Renew). It is never held while waiting for mu.
	arrMu    sync.Mutex
	arrivals map[renewalKey]renewal
}

// New returns a registry, restoring the table from opts.Store if it has one.
func New(opts Options) (*Registry, error) {
	r := &Registry{opts: opts, now: opts.Now, log: opts.Logger}
	if r.now == nil {
		r.now = time.Now
	}
	if r.log == nil {
		r.log = discardLogger
	}
	if r.opts.MaxBindings <= 0 {
		r.opts.MaxBindings = DefaultMaxBindings
	}
	if r.opts.MaxMembersPerPort <= 0 {
		r.opts.MaxMembersPerPort = DefaultMaxMembersPerPort
	}
	t := &Table{}
	if opts.Store != nil {
		loaded, err := opts.Store.Load()
		if err != nil {
			return nil, fmt.Errorf("restore table: %w", err)
		}
		if loaded != nil {
			if err := r.checkTable(loaded); err != nil {
				return nil, fmt.Errorf("restore table: %w", err)
			}
			t = loaded
			// Leases run from the restart: the servers could not renew
			// while the gateway was down.
			now := r.now()
			for _, b := range t.bindings.All() {
				for i := range b.Members {
					m := &b.Members[i]
					if m.TTL > 0 {
						m.Expires = now.Add(m.TTL)
					}
					m.DownCause = downCauseOf(*m)
				}
			}
			// A port restored with its active down serves again from its
			// first healthy standby.
			r.repairLocked(&Table{}, t, now)
			r.recordLocked(r.staged)
			r.staged = nil
		}
	}
	r.snap.Store(t)
	r.route.Store(t)
	r.pending = t
	return r, nil
}

// Table returns the current snapshot: the newest durable table.
func (r *Registry) Table() *Table { return r.snap.Load() }

// Lookup finds where a new connection to (ip, port) goes; it takes no
// lock. It is Table().Lookup, except while a change that only moves the
// active role (a switch, a failover, a health or lease state) is being
// saved: Lookup routes by it from the moment the save starts, Table shows
// it once it is durable. See update.
func (r *Registry) Lookup(ip netip.Addr, port uint16) (Member, Key, bool) {
	return r.route.Load().Lookup(ip, port)
}

// SetApplier installs a and prepares the current table on it (as a change
// from the empty table). It replaces any earlier applier.
func (r *Registry) SetApplier(a Applier) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := a.Prepare(&Table{}, r.heldLocked()); err != nil {
		return fmt.Errorf("apply restored table: %w", err)
	}
	r.applier = a
	return nil
}

// Watch makes fn run after every change, once the new table is published
// and before the applier releases what the change dropped; fn runs with
// the registry's write lock held and must not call back into the registry.
// Dispatch uses it to close the connections of members that are gone while
// their addresses can still answer.
func (r *Registry) Watch(fn func(prev, next *Table)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.watchers = append(r.watchers, fn)
}

// Registration is a request to add or update a member.
type Registration struct {
	// Name is the server computer's name.
	Name string
	// IP and Port are the binding's key; Port 0 is every port (mode 1).
	IP   netip.Addr
	Port uint16
	// Backend is where connections go; port 0 means the client's port.
	Backend netip.AddrPort
	// State is the requested state; empty means active when the binding has
	// no active member, standby otherwise.
	State State
	// TTL is the lease; zero means permanent. Registering again renews it.
	TTL time.Duration
	// ProxyProtocol is the PROXY protocol header sent to the backend;
	// registering again replaces it (ProxyNone turns it off).
	ProxyProtocol ProxyProtocol
}

// Register adds a member to the binding (IP, Port), creating the binding if
// needed. Registering an existing member again updates its backend (and its
// state, if one is given). It returns the binding as it now stands.
func (r *Registry) Register(reg Registration) (Binding, error) {
	if err := r.checkRegistration(reg); err != nil {
		return Binding{}, err
	}
	var out Binding
	err := r.update(func(t *Table) error {
		b, err := r.register(t, reg)
		if err != nil {
			return err
		}
		out = b.clone()
		return nil
	})
	if err != nil {
		return Binding{}, err
	}
	return out, nil
}

// RegisterBatch applies regs in order as one change: one durable save, one
// new table, one Prepare of the applier for all the new addresses. It is
// all or nothing: if any registration is invalid or conflicts with the
// table or with an earlier one of the batch, it returns a *BatchError
// naming it and changes nothing. It returns each registration's binding as
// it stands after the whole batch.
func (r *Registry) RegisterBatch(regs []Registration) ([]Binding, error) {
	for i, reg := range regs {
		if err := r.checkRegistration(reg); err != nil {
			return nil, &BatchError{Index: i, Err: err}
		}
	}
	if len(regs) == 0 {
		return []Binding{}, nil
	}
	var out []Binding
	err := r.update(func(t *Table) error {
		for i, reg := range regs {
			if _, err := r.register(t, reg); err != nil {
				return &BatchError{Index: i, Err: err}
			}
		}
		out = make([]Binding, len(regs))
		for i, reg := range regs {
			b, _ := t.bindings.get(Key{IP: reg.IP, Port: reg.Port})
			out[i] = b.clone()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// register applies one checked registration to t, a table being built by
// update, and returns the new binding (t's own: clone it to hand it out).
func (r *Registry) register(t *Table, reg Registration) (*Binding, error) {
	k := Key{IP: reg.IP, Port: reg.Port}
	if be := reg.Backend.Addr().Unmap(); be == k.IP || r.isFront(t, be) {
		return nil, fmt.Errorf("register %s: %w", reg.Name, Invalid("backend", "%s is one of the gateway's own front addresses: the member's connections would come back into the gateway; give the server's address", be))
	}
	if !t.Holds(k.IP) {
		if who, ok := t.backendUser(k.IP); ok {
			return nil, fmt.Errorf("register %s: %w", reg.Name, fieldErr(ErrConflict, "ip", "%s is the backend address of %s: holding it would send that member's connections back into the gateway; change its backend first", k.IP, who))
		}
	}
	old, _ := t.bindings.get(k)
	b := cloneBinding(k, old)
	now := r.now()
	active, hasActive := b.Active()
	i := b.index(reg.Name)
	if k.Port == 0 && i < 0 && len(b.Members) > 0 {
		return nil, fmt.Errorf("register %s: %w", reg.Name, fieldErr(ErrConflict, "ip", "%s is already held by server %s; deregister it first", k.IP, b.Members[0].Name))
	}
	if old == nil && t.Len() >= r.opts.MaxBindings {
		return nil, fmt.Errorf("register %s: %w", reg.Name, fieldErr(ErrConflict, keyField(k), "the table holds %d bindings, the limit (state.max_bindings); deregister some, or raise the limit", t.Len()))
	}
	if i < 0 && len(b.Members) >= r.opts.MaxMembersPerPort {
		return nil, fmt.Errorf("register %s: %w", reg.Name, fieldErr(ErrConflict, "name", "%s has %d members, the limit (state.max_members_per_port); deregister some, or raise the limit", k, len(b.Members)))
	}
	state := reg.State
	if state == "" {
		state = Standby
		if !hasActive || active.Name == reg.Name {
			state = Active
		}
	}
	if state == Active && hasActive && active.Name != reg.Name {
		return nil, fmt.Errorf("register %s: %w", reg.Name, fieldErr(ErrConflict, "state", "%s already has active server %s; register as standby and use switch to change the active server", k, active.Name))
	}
	if i < 0 {
		b.Members = append(b.Members, Member{Name: reg.Name, State: state, Since: now, Cause: CauseRegister, Reason: "registered"})
		i = len(b.Members) - 1
	}
	m := &b.Members[i]
	m.Backend, m.TTL, m.Expires = reg.Backend, reg.TTL, time.Time{}
	m.ProxyProtocol = reg.ProxyProtocol
	if reg.TTL > 0 {
		m.Expires = now.Add(reg.TTL)
	}
	if m.State != state {
		m.State, m.Since, m.Cause, m.Reason, m.FailedOver = state, now, CauseRegister, "registered", false
	}
	if m.Down && m.DownCause != DownMaint { // a registration is proof of life, not the end of maintenance
		m.Down, m.DownCause, m.Since, m.Cause, m.Reason = false, DownNone, now, CauseRegister, "registered again"
	}
	r.failover(b, now)
	t.set(b)
	t.dropDrain(k, reg.Name) // back before its drain ended
	return b, nil
}

// Deregister removes member name from binding k; a binding left without
// members is removed. Removing the active member promotes nobody. The
// member's established connections are reset; DeregisterDrain lets them
// finish.
func (r *Registry) Deregister(name string, k Key) error {
	return r.DeregisterDrain(name, k, 0)
}

// Switch makes member to the active member of binding k and the former
// active a standby, in one step. Switching to the current active is a no-op.
// A switch to a member known to be down is refused (ErrConflict naming its
// health): it would leave the port without a server. SwitchForce makes it
// anyway.
func (r *Registry) Switch(k Key, to string) (Binding, error) {
	return r.switchTo(k, to, false)
}

// SwitchForce is Switch that also switches to a member known to be down
// (the operator's word that it serves): the member is marked up, and its
// next health check or lease check judges it again (and fails the port
// over if it is still down).
func (r *Registry) SwitchForce(k Key, to string) (Binding, error) {
	return r.switchTo(k, to, true)
}

func (r *Registry) switchTo(k Key, to string, force bool) (Binding, error) {
	if err := ValidateName(to); err != nil {
		return Binding{}, Invalid("to", "%v", err.(*FieldError).Msg)
	}
	var out Binding
	err := r.update(func(t *Table) error {
		old, i, err := t.member(k, to, "to")
		if err != nil {
			return fmt.Errorf("switch %s: %w", k, err)
		}
		target := old.Members[i]
		if target.Down && !force {
			return fmt.Errorf("switch %s: %w", k, fieldErr(ErrConflict, "to", "%s is down (%s: %s): switching to it would leave %s without a server; bring it up first, or force the switch (switch --force, \"force\": true)", to, target.DownCause, target.Reason, k))
		}
		if target.State == Active && !target.Down {
			out = old.clone()
			return errNoChange
		}
		b := cloneBinding(k, old)
		now := r.now()
		for j := range b.Members {
			m := &b.Members[j]
			switch {
			case j == i:
				m.State, m.Since, m.Cause, m.Reason = Active, now, CauseSwitch, "switch"
				if m.Down {
					m.Down, m.DownCause, m.Reason = false, DownNone, "switch --force to a member that was down ("+m.Reason+")"
				}
			case m.State == Active:
				m.State, m.Since, m.Cause, m.Reason = Standby, now, CauseSwitch, "switch to "+to
			}
			m.FailedOver = false
		}
		t.set(b)
		out = b.clone()
		return nil
	})
	if err != nil {
		return Binding{}, err
	}
	return out, nil
}

func (r *Registry) checkRegistration(reg Registration) error {
	if err := ValidateName(reg.Name); err != nil {
		return err
	}
	if err := r.checkIP(reg.IP); err != nil {
		return err
	}
	if err := r.checkBackend(reg.Backend.Addr()); err != nil {
		return err
	}
	switch reg.State {
	case "", Active, Standby:
	default:
		return Invalid("state", "%q: use %q or %q", reg.State, Active, Standby)
	}
	if reg.TTL != 0 && (reg.TTL < MinTTL || reg.TTL > MaxTTL) {
		return Invalid("ttl", "%v is outside %v..%v (omit it for a permanent registration)", reg.TTL, MinTTL, MaxTTL)
	}
	if !reg.ProxyProtocol.valid() {
		return Invalid("proxy_protocol", "%q: use %q, %q or none", string(reg.ProxyProtocol), ProxyV1, ProxyV2)
	}
	return nil
}

func (r *Registry) checkIP(ip netip.Addr) error {
	if !ip.IsValid() {
		return Invalid("ip", "missing")
	}
	if ip.Zone() != "" || ip.IsUnspecified() || ip.IsMulticast() || ip.IsLoopback() {
		return Invalid("ip", "%s is not a unicast host address", ip)
	}
	if len(r.opts.Networks) == 0 {
		return nil
	}
	for _, p := range r.opts.Networks {
		if p.Contains(ip) {
			// A /31 or /32 (RFC 3021), or an IPv6 /127 or /128, has no
			// network or broadcast address: every address is a host.
			hasNetworkAddr := ip.BitLen()-p.Bits() >= 2
			if hasNetworkAddr && ip.Is6() && ip == p.Masked().Addr() {
				return Invalid("ip", "%s is the subnet-router anycast address of %s", ip, p)
			}
			if hasNetworkAddr && ip.Is4() && (ip == p.Masked().Addr() || isBroadcast(ip, p)) {
				return Invalid("ip", "%s is the network or broadcast address of %s", ip, p)
			}
			return nil
		}
	}
	return Invalid("ip", "%s is outside the front networks %v (nic.networks)", ip, r.opts.Networks)
}

// checkBackend refuses a backend address that is no server's: one that
// would turn the gateway against itself or against its networks. The
// gateway's own front addresses are checked against the table, in
// register.
func (r *Registry) checkBackend(a netip.Addr) error {
	if !a.IsValid() || a.IsUnspecified() {
		return Invalid("backend", "%q is not a host address", a)
	}
	if a.Zone() != "" {
		return Invalid("backend", "%s: a backend address has no zone", a)
	}
	a = a.Unmap()
	switch {
	case a.IsUnspecified():
		return Invalid("backend", "%q is not a host address", a)
	case a.IsLoopback() && !r.opts.AllowLoopbackBackends:
		return Invalid("backend", "%s is a loopback address: the gateway would forward the front network to its own host (its control API, metrics, pprof); give the server's address", a)
	case a.IsLinkLocalUnicast():
		return Invalid("backend", "%s is a link-local address (169.254.0.0/16, fe80::/10): only the gateway's own links reach it (a cloud's metadata service lives there); give the server's routable address", a)
	case a.IsMulticast():
		return Invalid("backend", "%s is a multicast address: a TCP backend is one host", a)
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return Invalid("backend", "%s is the broadcast address: a TCP backend is one host", a)
	}
	for _, p := range r.opts.Networks {
		if a.Is4() && p.Addr().Is4() && p.Contains(a) && a.BitLen()-p.Bits() >= 2 && isBroadcast(a, p) {
			return Invalid("backend", "%s is the broadcast address of the front network %s: a TCP backend is one host", a, p)
		}
	}
	return nil
}

// isFront reports whether ip is one of the gateway's front addresses:
// held by t, or Options.FrontAddr's.
func (r *Registry) isFront(t *Table, ip netip.Addr) bool {
	ip = ip.Unmap()
	return t.Holds(ip) || (r.opts.FrontAddr != nil && r.opts.FrontAddr(ip))
}

// keyField names the request field that selects binding k.
func keyField(k Key) string {
	if k.Port != 0 {
		return "port"
	}
	return "ip"
}

func isBroadcast(ip netip.Addr, p netip.Prefix) bool {
	a := ip.As4()
	n := p.Masked().Addr().As4()
	for i := range 4 {
		bits := max(0, min(8, p.Bits()-8*i))
		mask := byte(0xff << (8 - bits))
		if a[i] != n[i]|^mask {
			return false
		}
	}
	return true
}

// checkTable validates a restored table.
func (r *Registry) checkTable(t *Table) error {
	for k, b := range t.bindings.All() {
		if k != b.Key {
			return fmt.Errorf("binding %s: stored under key %s", b.Key, k)
		}
		actives := 0
		seen := map[string]bool{}
		for _, m := range b.Members {
			if err := r.checkRegistration(Registration{Name: m.Name, IP: k.IP, Port: k.Port, Backend: m.Backend, State: m.State, ProxyProtocol: m.ProxyProtocol}); err != nil {
				return fmt.Errorf("binding %s member %q: %w", k, m.Name, err)
			}
			if r.isFront(t, m.Backend.Addr()) {
				return fmt.Errorf("binding %s member %q: %w", k, m.Name, Invalid("backend", "%s is one of the gateway's own front addresses: the member's connections would come back into the gateway", m.Backend.Addr()))
			}
			if m.State == "" {
				return fmt.Errorf("binding %s member %q: %w", k, m.Name, Invalid("state", "missing"))
			}
			switch m.DownCause {
			case DownNone, DownHealth, DownLease, DownMaint:
			default:
				return fmt.Errorf("binding %s member %q: %w", k, m.Name, Invalid("down_cause", "%q: use %q or %q", m.DownCause, DownHealth, DownLease))
			}
			if seen[m.Name] {
				return fmt.Errorf("binding %s: member %q appears twice", k, m.Name)
			}
			seen[m.Name] = true
			if m.State == Active {
				actives++
			}
		}
		if len(b.Members) == 0 || actives > 1 || (k.Port == 0 && len(b.Members) > 1) {
			return fmt.Errorf("binding %s: %d members, %d active: not a valid binding", k, len(b.Members), actives)
		}
	}
	return nil
}
