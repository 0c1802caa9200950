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
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Sentinel errors; callers branch with errors.Is.
var (
	// ErrInvalid reports a request whose fields are malformed or out of range.
	ErrInvalid = errors.New("invalid request")
	// ErrConflict reports a request that contradicts the current table.
	ErrConflict = errors.New("conflict")
	// ErrNotFound reports a binding or member that does not exist.
	ErrNotFound = errors.New("not found")
)

// FieldError is an error that names the request field at fault. Its kind
// is ErrInvalid unless Kind says otherwise (ErrConflict, ErrNotFound).
type FieldError struct {
	// Field is the request field, as the API and CLI spell it ("ip", "name").
	Field string
	// Msg says what is wrong with it.
	Msg string
	// Kind is the sentinel that errors.Is matches; nil means ErrInvalid.
	Kind error
}

// Error implements error.
func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Is makes errors.Is(err, kind) true, where kind is e.Kind or ErrInvalid.
func (e *FieldError) Is(target error) bool {
	if e.Kind == nil {
		return target == ErrInvalid
	}
	return target == e.Kind
}

// fieldErr returns a FieldError of kind for field.
func fieldErr(kind error, field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...), Kind: kind}
}

// Invalid returns a FieldError for field with a formatted message.
func Invalid(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// State is a member's state within its binding.
type State string

// Member states.
const (
	// Active members receive new connections; a binding has at most one.
	Active State = "active"
	// Standby members wait for a switch.
	Standby State = "standby"
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

// Key identifies a binding. Port 0 means every port of IP.
type Key struct {
	IP   netip.Addr `json:"ip"`
	Port uint16     `json:"port"`
}

// String formats the key as ip:port, or ip:* for every port.
func (k Key) String() string {
	if k.Port == 0 {
		if k.IP.Is6() {
			return "[" + k.IP.String() + "]:*"
		}
		return k.IP.String() + ":*"
	}
	return netip.AddrPortFrom(k.IP, k.Port).String()
}

// Member is one server computer in a binding.
type Member struct {
	// Name is the server computer's name, unique within the binding.
	Name string `json:"name"`
	// Backend is where its connections go; port 0 means the port that the
	// client dialled.
	Backend netip.AddrPort `json:"backend"`
	// State is active or standby.
	State State `json:"state"`
	// Since is when the member entered State.
	Since time.Time `json:"since"`
	// TTL is the member's lease; zero means permanent (the patent's
	// registration). A leased member must be renewed before Expires.
	TTL time.Duration `json:"ttl,omitempty"`
	// Expires is when the lease runs out; zero without a lease.
	Expires time.Time `json:"expires,omitzero"`
	// Down marks a member that its health check or its lease declared
	// gone; a down member receives no connections.
	Down bool `json:"down,omitempty"`
	// DownCause says what marked the member down; DownNone while it is
	// up. State files from before this field load with the cause that
	// their Reason names.
	DownCause DownCause `json:"down_cause,omitempty"`
	// FailedOver marks a former active that automatic failover demoted.
	FailedOver bool `json:"failed_over,omitempty"`
	// Cause says what last changed State or Down, for programs.
	Cause ChangeCause `json:"cause,omitempty"`
	// Reason says why State or Down last changed, for people: Cause with
	// details ("automatic failover: web-a lease expired").
	Reason string `json:"reason,omitempty"`
	// ProxyProtocol is the PROXY protocol header that the gateway writes
	// to each of the member's backend connections; ProxyNone writes none.
	// State files from before this field load as ProxyNone.
	ProxyProtocol ProxyProtocol `json:"proxy_protocol,omitempty"`
}

// Binding is one row of the table: a key and its ordered members.
type Binding struct {
	Key
	Members []Member `json:"members"`
}

// Active returns the binding's active member, down or not.
func (b *Binding) Active() (Member, bool) {
	for _, m := range b.Members {
		if m.State == Active {
			return m, true
		}
	}
	return Member{}, false
}

// Serving returns the member that new connections go to: the active
// member unless it is down.
func (b *Binding) Serving() (Member, bool) {
	m, ok := b.Active()
	if !ok || m.Down {
		return Member{}, false
	}
	return m, true
}

// Has reports whether name is a member of b.
func (b *Binding) Has(name string) bool { return b.index(name) >= 0 }

func (b *Binding) index(name string) int {
	return slices.IndexFunc(b.Members, func(m Member) bool { return m.Name == name })
}

// Table is an immutable snapshot of every binding. Never modify a Table
// obtained from the registry.
//
// A table is persistent: the registry derives the next table from the
// current one by copying only the path to what changed (see trie), so a
// change costs the same whatever the table's size, and the tables of two
// moments share every binding that did not change between them.
type Table struct {
	bindings trie[Key, *Binding]
	// ports are the bindings with a port (mode 2), also in bindings: a
	// table of 10,000 mode-1 addresses has a handful of them, which health
	// checks walk on every change.
	ports trie[Key, *Binding]
	// leased are the bindings with a member on a lease (also in
	// bindings): Expire looks at them every 100 ms, not at the whole
	// table.
	leased trie[Key, *Binding]
	// ips counts, per IP, the bindings and drains that hold it: the
	// addresses that the stack must hold, kept up to date change by
	// change instead of recomputed from the whole table.
	ips trie[addrKey, int]
	// drains are deregistered members whose connections still run; see
	// Drain. Shared between tables: copied before any change.
	drains []Drain
	// parts are the tables of a union (see Union), which has no bindings
	// of its own; their addresses are its addresses.
	parts []*Table
	// changes counts the binding and drain changes that led to this
	// table since the registry started: two tables whose counts are close
	// differ in few entries (see AddrDiff).
	changes uint64
	// addrs caches Addrs: a table no longer changes once anything reads
	// its addresses.
	addrs atomic.Pointer[map[netip.Addr]struct{}]
}

// Lookup returns the member that a connection to (ip, port) goes to: the
// active member of the exact (ip, port) binding if that binding exists,
// otherwise the active member of (ip, *). A port binding without an active
// member does not fall back to the every-port binding.
func (t *Table) Lookup(ip netip.Addr, port uint16) (Member, Key, bool) {
	k := Key{IP: ip, Port: port}
	b, ok := t.bindings.get(k)
	if !ok {
		k.Port = 0
		if b, ok = t.bindings.get(k); !ok {
			return Member{}, k, false
		}
	}
	m, ok := b.Serving()
	return m, k, ok
}

// member finds member name of binding k, or returns a not-found
// FieldError naming the binding's field or nameField.
func (t *Table) member(k Key, name, nameField string) (*Binding, int, error) {
	b, ok := t.bindings.get(k)
	if !ok {
		return nil, -1, fieldErr(ErrNotFound, keyField(k), "nothing is registered on %s", k)
	}
	i := b.index(name)
	if i < 0 {
		return nil, -1, fieldErr(ErrNotFound, nameField, "%s is not registered on %s", name, k)
	}
	return b, i, nil
}

// Binding returns the binding at k.
func (t *Table) Binding(k Key) (*Binding, bool) {
	return t.bindings.get(k)
}

// Bindings returns every binding ordered by IP, then port.
func (t *Table) Bindings() []*Binding {
	out := make([]*Binding, 0, t.bindings.Len())
	for _, b := range t.bindings.All() {
		out = append(out, b)
	}
	sortBindings(out)
	return out
}

// PortBindings returns the bindings with a port (mode 2) ordered by IP,
// then port. Its cost follows their number, not the table's size: a
// table of many mode-1 addresses has few of them.
func (t *Table) PortBindings() []*Binding {
	out := make([]*Binding, 0, t.ports.Len())
	for _, b := range t.ports.All() {
		out = append(out, b)
	}
	sortBindings(out)
	return out
}

// sortBindings orders bs by IP, then port.
func sortBindings(bs []*Binding) {
	slices.SortFunc(bs, func(a, b *Binding) int {
		if c := a.IP.Compare(b.IP); c != 0 {
			return c
		}
		return int(a.Port) - int(b.Port)
	})
}

// Addrs returns the set of IPs that the table holds. The set is computed
// once per table and shared: callers must not modify it. It costs a pass
// over the whole table: Holds and AddrDiff answer the usual questions
// without one.
func (t *Table) Addrs() map[netip.Addr]struct{} {
	if p := t.addrs.Load(); p != nil {
		return *p
	}
	out := make(map[netip.Addr]struct{}, t.ips.Len())
	for a := range t.ips.All() {
		out[a.Addr] = struct{}{}
	}
	for _, p := range t.parts {
		for ip := range p.Addrs() {
			out[ip] = struct{}{}
		}
	}
	t.addrs.Store(&out)
	return out
}

// Holds reports whether the table holds ip.
func (t *Table) Holds(ip netip.Addr) bool {
	if t.parts != nil {
		return slices.ContainsFunc(t.parts, func(p *Table) bool { return p.Holds(ip) })
	}
	_, ok := t.ips.get(addrKey{ip})
	return ok
}

// AddrDiff returns the addresses that a holds and b does not, in no
// particular order. Its cost follows the number of changes between the two
// tables, not their size: it compares only what they do not share.
// Either may be a union (see Union).
func AddrDiff(a, b *Table) []netip.Addr {
	switch {
	case len(a.parts) > 0:
		var out []netip.Addr
		for _, p := range a.parts {
			out = append(out, AddrDiff(p, b)...)
		}
		slices.SortFunc(out, netip.Addr.Compare)
		return slices.Compact(out)
	case len(b.parts) > 0:
		// a - (b1 ∪ b2) = (a - bi) minus what the others hold; diff
		// against the part nearest to a (fewest changes apart), which
		// shares the most with it.
		near := slices.MinFunc(b.parts, func(x, y *Table) int {
			return cmpDistance(a.changes, x.changes, y.changes)
		})
		out := AddrDiff(a, near)
		return slices.DeleteFunc(out, func(ip netip.Addr) bool {
			return slices.ContainsFunc(b.parts, func(p *Table) bool { return p != near && p.Holds(ip) })
		})
	}
	var out []netip.Addr
	diff(a.ips, b.ips, func(k addrKey, _ int, inA bool, _ int, inB bool) {
		if inA && !inB {
			out = append(out, k.Addr)
		}
	})
	return out
}

// cmpDistance compares the distances of x and y from c.
func cmpDistance(c, x, y uint64) int {
	dist := func(v uint64) uint64 {
		if v > c {
			return v - c
		}
		return c - v
	}
	return cmp.Compare(dist(x), dist(y))
}

// Len returns the number of bindings.
func (t *Table) Len() int { return t.bindings.Len() }

// clone returns a table for update to change: it shares everything with t
// (the persistent tries and, until it changes them, the drains).
func (t *Table) clone() *Table {
	return &Table{bindings: t.bindings, ports: t.ports, leased: t.leased, ips: t.ips, drains: t.drains[:len(t.drains):len(t.drains)], changes: t.changes}
}

// set puts b at its key, replacing what was there; t is a table being
// built.
func (t *Table) set(b *Binding) {
	if _, had := t.bindings.get(b.Key); !had {
		t.hold(b.IP, 1)
	}
	t.bindings = t.bindings.with(b.Key, b)
	if b.Port != 0 {
		t.ports = t.ports.with(b.Key, b)
	}
	if slices.ContainsFunc(b.Members, func(m Member) bool { return m.TTL > 0 }) {
		t.leased = t.leased.with(b.Key, b)
	} else {
		t.leased = t.leased.without(b.Key)
	}
	t.changes++
}

// del removes the binding at k, if any; t is a table being built.
func (t *Table) del(k Key) {
	if _, had := t.bindings.get(k); !had {
		return
	}
	t.bindings = t.bindings.without(k)
	if k.Port != 0 {
		t.ports = t.ports.without(k)
	}
	t.leased = t.leased.without(k)
	t.hold(k.IP, -1)
	t.changes++
}

// hold adds d to ip's count of holders, removing ip at zero.
func (t *Table) hold(ip netip.Addr, d int) {
	k := addrKey{ip}
	n, _ := t.ips.get(k)
	if n += d; n > 0 {
		t.ips = t.ips.with(k, n)
	} else {
		t.ips = t.ips.without(k)
	}
}

// addDrain appends d to the drains; t is a table being built.
func (t *Table) addDrain(d Drain) {
	t.drains = append(t.drains[:len(t.drains):len(t.drains)], d)
	t.hold(d.Key.IP, 1)
	t.changes++
}

// deleteDrains removes the drains for which del is true, calling del once
// per drain; t is a table being built. It copies the drains only when one
// goes.
func (t *Table) deleteDrains(del func(Drain) bool) {
	var kept []Drain
	for i, d := range t.drains {
		if !del(d) {
			if kept != nil {
				kept = append(kept, d)
			}
			continue
		}
		if kept == nil {
			kept = append(make([]Drain, 0, len(t.drains)), t.drains[:i]...)
		}
		t.hold(d.Key.IP, -1)
		t.changes++
	}
	if kept != nil {
		t.drains = kept
	}
}

// clone returns a copy of b that shares no memory with it, for handing out
// of the registry: the caller may modify it without touching the snapshot.
func (b *Binding) clone() Binding {
	return Binding{Key: b.Key, Members: slices.Clone(b.Members)}
}

// cloneBinding returns a deep copy of b (or a new empty binding at k).
func cloneBinding(k Key, b *Binding) *Binding {
	if b == nil {
		return &Binding{Key: k}
	}
	return &Binding{Key: b.Key, Members: slices.Clone(b.Members)}
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
}

// Registry holds the table. Its methods are safe for concurrent use.
type Registry struct {
	opts Options
	now  func() time.Time
	log  *slog.Logger
	// snap is the newest durable table: Table, watchers and the applier's
	// releases follow it.
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

// BatchError is the error of RegisterBatch: the registration at Index (from
// 0) that could not be applied, and why. Nothing of the batch was applied.
type BatchError struct {
	// Index is the position of the registration in the batch.
	Index int
	// Err is its error, as Register would return it.
	Err error
}

// Error implements error.
func (e *BatchError) Error() string { return fmt.Sprintf("registration %d: %v", e.Index, e.Err) }

// Unwrap returns Err, so that errors.Is and errors.As see the kind and the
// field of the registration's error.
func (e *BatchError) Unwrap() error { return e.Err }

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
	old, _ := t.bindings.get(k)
	b := cloneBinding(k, old)
	now := r.now()
	active, hasActive := b.Active()
	i := b.index(reg.Name)
	if k.Port == 0 && i < 0 && len(b.Members) > 0 {
		return nil, fmt.Errorf("register %s: %w", reg.Name, fieldErr(ErrConflict, "ip", "%s is already held by server %s; deregister it first", k.IP, b.Members[0].Name))
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
	if m.Down { // a registration is proof of life
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
func (r *Registry) Switch(k Key, to string) (Binding, error) {
	if err := ValidateName(to); err != nil {
		return Binding{}, Invalid("to", "%v", err.(*FieldError).Msg)
	}
	var out Binding
	err := r.update(func(t *Table) error {
		old, i, err := t.member(k, to, "to")
		if err != nil {
			return fmt.Errorf("switch %s: %w", k, err)
		}
		if old.Members[i].State == Active {
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

// errNoChange tells update that fn succeeded without changing anything.
var errNoChange = errors.New("no change")

// update applies fn to a copy of the newest table and, if fn succeeds,
// makes the copy durable and visible: prepare, save, publish, watchers,
// commit. It returns once the change is durable and published, or failed.
//
// Saves are group-committed: changes made while a save is running wait
// together and the next save makes them all durable at once, so N
// concurrent writers cost one fsync, not N. A change is applied to the
// newest table (r.pending), which runs ahead of the published one
// (r.snap) by at most two batches, the one being saved and the one
// waiting; Table only ever shows durable tables, and so does Lookup except
// for a change of states only, which it routes by while it is being saved
// (routesEarly).
func (r *Registry) update(fn func(*Table) error) error {
	r.mu.Lock()
	next := r.pending.clone()
	if err := fn(next); err != nil {
		r.mu.Unlock()
		if errors.Is(err, errNoChange) {
			return nil
		}
		return err
	}
	if r.applier != nil {
		// The stack still holds what the published table holds even if
		// a pending change dropped it: only add what neither has.
		if err := r.applier.Prepare(r.heldLocked(), next); err != nil {
			r.mu.Unlock()
			return err
		}
	}
	r.pending = next
	if r.opts.Store == nil {
		prev := r.snap.Load()
		r.publishLocked(prev, next)
		r.mu.Unlock()
		return nil
	}
	if routesEarly(r.route.Load(), next) {
		// Only states changed (a switch, a failover): new connections
		// follow it now, while it is being saved, so that a switch takes
		// effect after the request rather than after the disk. The answer,
		// Table, the watchers (events, metrics, pruning) and the release of
		// anything wait until it is durable; if the save fails, route goes
		// back with pending and nothing ever reports the change. What can
		// be seen of a change that failed: the connections that arrived
		// during the save went to a member that is still in its binding.
		r.route.Store(next)
	}
	b := r.open
	if b == nil {
		b = &batch{done: make(chan struct{}), lead: make(chan struct{}, 1)}
		r.open = b
	}
	lead := !r.saving
	if lead {
		r.saving = true
		r.open, b.table = nil, r.pending
	}
	r.mu.Unlock()
	if !lead {
		select {
		case <-b.done:
			return b.err
		case <-b.lead: // the previous save handed over: save this batch
		}
	}
	r.save(b)
	return b.err
}

// batch is a group of changes that one save makes durable.
type batch struct {
	// table is the table to save: the newest one when the batch closed.
	table *Table
	// done is closed when the batch is published or has failed (err).
	done chan struct{}
	// lead receives once, to make one of the batch's writers its saver.
	lead chan struct{}
	err  error
}

// save makes b durable, then publishes it, or rolls back every change not
// yet durable if the save fails. It hands the next open batch to one of its
// writers.
func (r *Registry) save(b *batch) {
	err := r.opts.Store.Save(b.table)
	r.mu.Lock()
	defer r.mu.Unlock()
	defer close(b.done)
	prev := r.snap.Load()
	if err != nil {
		b.err = fmt.Errorf("save table: %w", err)
		// Later changes were built on this one: they fail with it.
		if r.applier != nil {
			r.applier.Commit(r.pending, prev) // release what Prepare took
		}
		r.pending = prev
		r.route.Store(prev)
		if o := r.open; o != nil {
			o.err = fmt.Errorf("save table (with an earlier change): %w", err)
			r.open = nil
			close(o.done)
		}
		r.saving = false
		return
	}
	r.publishLocked(prev, b.table)
	if o := r.open; o != nil {
		r.open, o.table = nil, r.pending
		o.lead <- struct{}{}
		return
	}
	r.saving = false
}

// publishLocked makes next (durable) the published table and releases what
// prev held that neither next nor a pending change holds; r.mu is held.
func (r *Registry) publishLocked(prev, next *Table) {
	r.snap.Store(next)
	// A table routed early that is newer than next (a switch made while
	// next was being saved) holds next's changes: it stays.
	if cur := r.route.Load(); cur.changes <= next.changes {
		r.route.Store(next)
	}
	for _, w := range r.watchers {
		w(prev, next)
	}
	if r.applier != nil {
		r.applier.Commit(prev, Union(next, r.pending))
	}
}

// routesEarly reports whether next may be routed (Lookup) before it is
// durable: it has the same bindings as cur, with the same members in the
// same order, backends and PROXY settings, and the same drains; only
// members' states, health and leases differ. Such a change adds and
// releases nothing and ends no connection, so undoing it is as safe as
// doing it. The cost follows the size of the change (see diff).
func routesEarly(cur, next *Table) bool {
	if len(cur.parts) > 0 || len(next.parts) > 0 || !slices.Equal(cur.drains, next.drains) {
		return false
	}
	same := true
	diff(cur.bindings, next.bindings, func(_ Key, a *Binding, inCur bool, b *Binding, inNext bool) {
		if !same {
			return
		}
		if !inCur || !inNext || len(a.Members) != len(b.Members) {
			same = false
			return
		}
		for i := range a.Members {
			x, y := &a.Members[i], &b.Members[i]
			if x.Name != y.Name || x.Backend != y.Backend || x.ProxyProtocol != y.ProxyProtocol {
				same = false
				return
			}
		}
	})
	return same
}

// heldLocked returns a table that holds every address the applier holds:
// the published table's and the pending one's; r.mu is held.
func (r *Registry) heldLocked() *Table {
	return Union(r.snap.Load(), r.pending)
}

// Union returns a table, for Addrs and Holds only (it has no bindings of
// its own), that holds the addresses of both; a itself when b is a. It
// copies nothing. The registry hands its Applier such tables while a change
// is being saved: what the stack holds is then the published table's
// addresses and the pending one's.
func Union(a, b *Table) *Table {
	if a == b {
		return a
	}
	return &Table{parts: []*Table{a, b}}
}

func (r *Registry) checkRegistration(reg Registration) error {
	if err := ValidateName(reg.Name); err != nil {
		return err
	}
	if err := r.checkIP(reg.IP); err != nil {
		return err
	}
	if !reg.Backend.Addr().IsValid() || reg.Backend.Addr().IsUnspecified() {
		return Invalid("backend", "%q is not a host address", reg.Backend.Addr())
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
			if m.State == "" {
				return fmt.Errorf("binding %s member %q: %w", k, m.Name, Invalid("state", "missing"))
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
