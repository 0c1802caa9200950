// Package stack builds and owns vipmux's userspace TCP/IP stack (gVisor
// netstack): one NIC on the front link endpoint, the addresses that the
// registry's table holds (added and removed as the table changes), ARP and
// NDP answered by gVisor itself for exactly those addresses, routes for the
// front networks, and the TCP options of the data path.
//
// Addresses may be IPv4 or IPv6, mixed on the one NIC. Whenever it starts
// holding an address it announces it, so that neighbours move their caches
// to the front NIC's MAC without asking: an IPv4 address with gratuitous ARP
// (RFC 5227 ARP announcements), an IPv6 one with unsolicited Neighbor
// Advertisements (RFC 4861 section 7.2.6). gVisor answers ARP requests and
// NDP Neighbor Solicitations for the held addresses itself. Before it holds
// a new table address it probes the front link for another holder (RFC 5227
// ARP probes or RFC 4862 NDP duplicate address detection, both gVisor's)
// and refuses the address if one answers; see Options.DADProbes and
// Options.Restored.
//
// It exposes what dispatch needs, a way to install the TCP forwarder, and
// keeps the rest of gVisor inside. It does not decide where connections go;
// that is dispatch's job, from the registry's table.
//
//	s, err := stack.New(stack.Options{Link: link.Endpoint, Networks: nets, Logger: log})
//	reg.SetApplier(s)             // hold the table's addresses
//	s.HandleTCP(8192, fwd.Handle) // hand every SYN to dispatch
//	defer s.Close()
package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vipmux/vipmux/registry"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// nicID is the ID of the one front NIC.
const nicID tcpip.NICID = 1

// TCP buffer sizes: gVisor allocates lazily, so these are limits, with
// receive-buffer moderation (auto-tuning) growing a busy connection's window
// from the default up to the maximum.
const (
	tcpBufferMin     = 4 << 10
	tcpBufferDefault = 256 << 10
	tcpBufferMax     = 8 << 20
)

// ErrNotInNetworks reports an address outside every front network.
var ErrNotInNetworks = errors.New("address outside the front networks")

// Options configures New.
type Options struct {
	// Link is the front link endpoint (from package nic, or a channel
	// endpoint in tests). Required.
	Link gstack.LinkEndpoint
	// Networks are the on-link front subnets. Required, at least one.
	Networks []netip.Prefix
	// Router is the next hop toward clients outside Networks; the zero
	// value means none.
	Router netip.Addr
	// Static are addresses held for the stack's whole life regardless of the
	// table (mode 2's shared address).
	Static []netip.Addr
	// TimeWait is the TIME_WAIT duration of the stack's TCP connections;
	// zero means gVisor's default (60 s). A short one lets a client reuse a
	// port soon after the gateway closed a connection on it.
	TimeWait time.Duration
	// DelayedAck is how long a TCP connection may hold back the ACK of
	// received data for a segment to carry it (the response, a FIN); zero
	// acknowledges at once. An ACK still goes at once when more than one
	// full-sized segment is unacknowledged, for out-of-order data, and
	// outside ESTABLISHED (third_party/gvisor-patches/0001, a patch of
	// ours: gVisor has no delayed ACK). vipmux's config default
	// ([dispatch] delayed_ack) is 2ms.
	DelayedAck time.Duration
	// Clock is the stack's clock, which drives TCP's timers; nil means the
	// real one. Tests pass a faketime.ManualClock.
	Clock tcpip.Clock
	// GARPCount is how many announcements the stack sends whenever it
	// starts holding an address: a Static one in New, a table address in
	// Prepare (including the table restored at start-up). For an IPv4
	// address an announcement is a gratuitous ARP (an ARP request with
	// sender and target IP both the address, from the NIC's MAC, to
	// broadcast); for an IPv6 address an unsolicited Neighbor
	// Advertisement (Override set, Solicited clear, target the address,
	// with the NIC's MAC as target link-layer address, to all-nodes
	// ff02::1). Zero sends none; vipmux's config default ([arp]
	// garp_count) is 3. At most MaxGARPCount.
	GARPCount int
	// GARPInterval is the time between two announcements of one address.
	// The first goes out before Prepare returns, the others from a
	// goroutine that Close stops. Required (MinARPInterval..MaxARPInterval)
	// when GARPCount > 1;
	// config default ([arp] garp_interval) 200ms.
	GARPInterval time.Duration
	// DADProbes is how many probes Prepare sends before it holds a new
	// table address: ARP probes (sender IP 0.0.0.0, target the address)
	// for IPv4, NDP duplicate address detection Neighbor Solicitations
	// (source ::, to the address's solicited-node group) for IPv6. If
	// another host answers for the address within DADProbes x
	// DADInterval, Prepare fails with a *registry.FieldError of kind
	// registry.ErrConflict naming the address and the MAC that answered,
	// and holds nothing. The addresses of one Prepare are probed at once,
	// so a change waits DADProbes x DADInterval (the default 200ms) in
	// all, with the registry's write lock held. Static addresses and
	// Restored ones are not probed. A conflict is an ARP reply for the
	// address (what a Linux holder sends to a probe); gVisor's detection
	// does not see a host that is probing for the same address at the same
	// moment (RFC 5227's simultaneous probe). For IPv6 a conflict is a
	// Neighbor Advertisement for the address (what a Linux holder sends
	// to a DAD solicitation). Zero disables detection;
	// config default ([arp] dad_probes) 2. At most MaxDADProbes.
	DADProbes int
	// DADInterval is the time between two probes, and the time that the
	// last probe waits for an answer. Required
	// (MinARPInterval..MaxARPInterval) when DADProbes > 0; config default
	// ([arp] dad_interval) 100ms.
	DADInterval time.Duration
	// Restored are the addresses of the table restored from the state
	// file at start-up: the gateway held them before it restarted, so
	// they are the gateway's already. The first Prepare that adds one
	// holds and announces it without probing; an address added again
	// later (after it was released) is probed like any new one.
	Restored []netip.Addr
	// Logger receives address changes. Required.
	Logger *slog.Logger
}

// errClosed reports a Prepare interrupted by Close.
var errClosed = errors.New("stack closed")

// Stack is the gateway's userspace stack with its one front NIC.
type Stack struct {
	s        *gstack.Stack
	log      *slog.Logger
	networks []netip.Prefix
	mac      tcpip.LinkAddress

	// ctx is cancelled by Close; it stops the announcer's goroutine,
	// which wg tracks.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// mu serializes Prepare and Commit (the registry already does; this
	// guards the stack against other callers) and guards the following
	// fields.
	mu sync.Mutex
	// static are the Static addresses (see SetStatic).
	static map[netip.Addr]struct{}
	// table holds the registry addresses that the stack holds: prev and
	// next of the last Prepare, or the next of the last Commit.
	table *registry.Table
	// garp and dad are the ARP settings (see SetARP).
	garp announceConfig
	dad  gstack.DADConfigurations
	// announcer sends the announcements after the first of each address.
	announcer *announcer
	// restored are the Restored addresses not yet added.
	restored map[netip.Addr]struct{}

	closeOnce sync.Once
}

// announceConfig is how the stack announces an address.
type announceConfig struct {
	count    int
	interval time.Duration
}

// ARPSettings are how the stack claims its IPv4 addresses on the front
// link; the fields are those of Options with the same names.
type ARPSettings struct {
	GARPCount    int
	GARPInterval time.Duration
	DADProbes    int
	DADInterval  time.Duration
}

// check reports the first field of s that is out of range.
func (s ARPSettings) check() error {
	switch {
	case s.GARPCount < 0 || s.GARPCount > MaxGARPCount:
		return fmt.Errorf("GARPCount %d out of range 0..%d", s.GARPCount, MaxGARPCount)
	case s.GARPCount > 1 && (s.GARPInterval < MinARPInterval || s.GARPInterval > MaxARPInterval):
		return fmt.Errorf("GARPInterval %v out of range %v..%v with GARPCount %d", s.GARPInterval, MinARPInterval, MaxARPInterval, s.GARPCount)
	case s.DADProbes < 0 || s.DADProbes > MaxDADProbes:
		return fmt.Errorf("DADProbes %d out of range 0..%d", s.DADProbes, MaxDADProbes)
	case s.DADProbes > 0 && (s.DADInterval < MinARPInterval || s.DADInterval > MaxARPInterval):
		return fmt.Errorf("DADInterval %v out of range %v..%v with DADProbes %d", s.DADInterval, MinARPInterval, MaxARPInterval, s.DADProbes)
	}
	return nil
}

func (s ARPSettings) dad() gstack.DADConfigurations {
	return gstack.DADConfigurations{DupAddrDetectTransmits: uint8(s.DADProbes), RetransmitTimer: s.DADInterval}
}

func (s ARPSettings) announce() announceConfig {
	return announceConfig{count: s.GARPCount, interval: s.GARPInterval}
}

// SetARP replaces the ARP settings that New took from Options. They apply
// to the addresses that the stack starts holding from now on;
// announcements already under way finish with the old settings. On an
// error nothing changes.
func (st *Stack) SetARP(s ARPSettings) error {
	if err := s.check(); err != nil {
		return fmt.Errorf("set arp: %w", err)
	}
	ep, err := st.s.GetNetworkEndpoint(nicID, arp.ProtocolNumber)
	if err != nil {
		return fmt.Errorf("set arp: %s", err)
	}
	d, ok := ep.(gstack.DuplicateAddressDetector)
	if !ok {
		return fmt.Errorf("set arp: %T does no duplicate address detection", ep)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.garp, st.dad = s.announce(), s.dad()
	d.SetDADConfigurations(st.dad)
	return nil
}

// SetTimeWait changes Options.TimeWait for the connections that close from
// now on; zero means gVisor's default (60 s).
func (st *Stack) SetTimeWait(d time.Duration) error {
	if d <= 0 {
		d = 60 * time.Second
	}
	o := tcpip.TCPTimeWaitTimeoutOption(d)
	if err := st.s.SetTransportProtocolOption(tcp.ProtocolNumber, &o); err != nil {
		return fmt.Errorf("tcp time-wait %v: %s", d, err)
	}
	return nil
}

// SetDelayedAck changes Options.DelayedAck for the connections established
// from now on; zero acknowledges at once.
func (st *Stack) SetDelayedAck(d time.Duration) error {
	o := tcpip.TCPDelayedAckOption(d)
	if err := st.s.SetTransportProtocolOption(tcp.ProtocolNumber, &o); err != nil {
		return fmt.Errorf("tcp delayed ack %v: %s", d, err)
	}
	return nil
}

// SetStatic replaces the Static addresses (mode 2's shared address) while
// the stack runs. A new one is held and announced at once, not probed (as
// in New); if the table holds it already, it only becomes static. One that
// is no longer static is released, unless the table holds it: the table
// owns it from then on. On an error nothing changes.
func (st *Stack) SetStatic(addrs []netip.Addr) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	var inTable map[netip.Addr]struct{}
	if st.table != nil {
		inTable = st.table.Addrs()
	}
	want := make(map[netip.Addr]struct{}, len(addrs))
	var added []netip.Addr
	for _, a := range addrs {
		want[a] = struct{}{}
		_, static := st.static[a]
		_, held := inTable[a]
		if static || held {
			continue
		}
		if err := st.add(a); err != nil {
			for _, b := range added {
				st.remove(b)
			}
			return fmt.Errorf("set static addresses: %w", err)
		}
		added = append(added, a)
	}
	var removed []netip.Addr
	for a := range st.static {
		_, keep := want[a]
		_, held := inTable[a]
		if !keep && !held {
			st.remove(a)
			removed = append(removed, a)
		}
	}
	st.static = want
	st.logAddrs("holding", added)
	st.logAddrs("released", removed)
	return nil
}

var _ registry.Applier = (*Stack)(nil)

// New builds the stack on opts.Link. The link is attached (its goroutines
// start) before New returns.
func New(opts Options) (*Stack, error) {
	if opts.Link == nil {
		return nil, errors.New("new stack: no link endpoint")
	}
	if opts.Logger == nil {
		return nil, errors.New("new stack: no logger")
	}
	if len(opts.Networks) == 0 {
		return nil, errors.New("new stack: no front networks")
	}
	arpSettings := ARPSettings{GARPCount: opts.GARPCount, GARPInterval: opts.GARPInterval, DADProbes: opts.DADProbes, DADInterval: opts.DADInterval}
	if err := arpSettings.check(); err != nil {
		return nil, fmt.Errorf("new stack: %w", err)
	}
	dad := arpSettings.dad()
	s := gstack.New(gstack.Options{
		// gVisor's ARP endpoint runs the RFC 5227 probes (DAD) itself; it
		// reports a reply for the probed address with the holder's MAC.
		// The IPv6 endpoint starts with DAD off: gVisor would otherwise
		// run DAD on every address it is given and keep the address
		// tentative (deaf) meanwhile, restored and static ones included.
		// probeLocked turns it on for the probes of new addresses only.
		// NDP itself (answering Neighbor Solicitations for held
		// addresses, resolving clients) needs no options; no link-local
		// address, no router solicitations, no SLAAC. MLD reports the
		// solicited-node group of every held address (from ::, as RFC
		// 3590 allows without a link-local address), so that switches
		// with MLD snooping forward the solicitations for it to us.
		NetworkProtocols: []gstack.NetworkProtocolFactory{
			ipv4.NewProtocol,
			ipv6.NewProtocolWithOptions(ipv6.Options{MLD: ipv6.MLDOptions{Enabled: true}}),
			arp.NewProtocolWithOptions(arp.Options{DADConfigs: dad}),
		},
		TransportProtocols: []gstack.TransportProtocolFactory{tcp.NewProtocol},
		HandleLocal:        false,
		Clock:              opts.Clock,
	})
	ctx, cancel := context.WithCancel(context.Background())
	st := &Stack{
		s:        s,
		log:      opts.Logger,
		networks: opts.Networks,
		static:   map[netip.Addr]struct{}{},
		mac:      opts.Link.LinkAddress(),
		garp:     arpSettings.announce(),
		dad:      dad,
		ctx:      ctx,
		cancel:   cancel,
		restored: map[netip.Addr]struct{}{},
	}
	st.announcer = newAnnouncer(st.announce)
	st.wg.Add(1)
	go func() {
		defer st.wg.Done()
		st.announcer.run(ctx)
	}()
	for _, a := range opts.Restored {
		st.restored[a] = struct{}{}
	}
	if err := st.configure(opts); err != nil {
		st.Close()
		return nil, fmt.Errorf("new stack: %w", err)
	}
	return st, nil
}

func (st *Stack) configure(opts Options) error {
	for _, o := range []tcpip.SettableTransportProtocolOption{
		ptr(tcpip.TCPSACKEnabled(true)),
		// netstack's cubic overflows in its cwnd arithmetic (gVisor issue
		// 11632); reno is what tailscale runs too.
		ptr(tcpip.CongestionControlOption("reno")),
		ptr(tcpip.TCPModerateReceiveBufferOption(true)),
		&tcpip.TCPReceiveBufferSizeRangeOption{Min: tcpBufferMin, Default: tcpBufferDefault, Max: tcpBufferMax},
		&tcpip.TCPSendBufferSizeRangeOption{Min: tcpBufferMin, Default: tcpBufferDefault, Max: tcpBufferMax},
		ptr(tcpip.TCPTimeWaitReuseOption(tcpip.TCPTimeWaitReuseGlobal)),
		ptr(tcpip.TCPDelayedAckOption(opts.DelayedAck)),
	} {
		if err := st.s.SetTransportProtocolOption(tcp.ProtocolNumber, o); err != nil {
			return fmt.Errorf("tcp option %T: %s", o, err)
		}
	}
	if opts.TimeWait > 0 {
		o := tcpip.TCPTimeWaitTimeoutOption(opts.TimeWait)
		if err := st.s.SetTransportProtocolOption(tcp.ProtocolNumber, &o); err != nil {
			return fmt.Errorf("tcp time-wait %v: %s", opts.TimeWait, err)
		}
	}
	if err := st.s.CreateNICWithOptions(nicID, opts.Link, gstack.NICOptions{Name: "front"}); err != nil {
		return fmt.Errorf("create nic: %s", err)
	}
	var routes []tcpip.Route
	for _, p := range opts.Networks {
		sub, err := tcpip.NewSubnet(toAddr(p.Masked().Addr()), tcpip.MaskFromBytes(prefixMask(p)))
		if err != nil {
			return fmt.Errorf("route for %s: %v", p, err)
		}
		routes = append(routes, tcpip.Route{Destination: sub, NIC: nicID})
	}
	if opts.Router.IsValid() {
		dst := header.IPv4EmptySubnet
		if opts.Router.Is6() {
			dst = header.IPv6EmptySubnet
		}
		routes = append(routes, tcpip.Route{Destination: dst, Gateway: toAddr(opts.Router), NIC: nicID})
	}
	st.s.SetRouteTable(routes)
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, a := range opts.Static {
		if err := st.add(a); err != nil {
			return err
		}
		st.static[a] = struct{}{}
	}
	st.logAddrs("holding", opts.Static)
	return nil
}

// HandleTCP installs h as the handler of every TCP SYN that reaches one of
// the stack's addresses. At most maxInFlight handshakes are handed on at
// once; retransmitted SYNs of a handshake in flight are not handed on again.
// h must call Complete on the request exactly once.
func (st *Stack) HandleTCP(maxInFlight int, h func(*tcp.ForwarderRequest)) {
	fwd := tcp.NewForwarder(st.s, 0, maxInFlight, h)
	st.s.SetTransportProtocolHandler(tcp.ProtocolNumber, fwd.HandlePacket)
}

// Prepare implements registry.Applier: it adds the addresses that next
// holds and prev does not, after probing the front link for another holder
// of each new address (see Options.DADProbes; this takes DADProbes x
// DADInterval). If a probe is answered or an add fails, nothing is held:
// the addresses added so far are removed again.
func (st *Stack) Prepare(prev, next *registry.Table) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	news := st.diff(next, prev)
	if err := st.probeLocked(news); err != nil {
		return err
	}
	var added []netip.Addr
	for _, a := range news {
		if err := st.add(a); err != nil {
			for _, b := range added {
				st.remove(b)
			}
			return err
		}
		added = append(added, a)
	}
	for _, a := range news {
		delete(st.restored, a)
	}
	st.logAddrs("holding", news)
	// Prepare only adds: what prev holds stays held until a Commit.
	st.table = registry.Union(prev, next)
	return nil
}

// probeLocked runs duplicate address detection for the addresses of addrs
// that are not restored ones, all at once (ARP for IPv4, NDP for IPv6), and
// returns a conflict error for the first (lowest) address that another host
// answered for.
func (st *Stack) probeLocked(addrs []netip.Addr) error {
	if st.dad.DupAddrDetectTransmits == 0 {
		return nil
	}
	type result struct {
		ip  netip.Addr
		res gstack.DADResult
	}
	results := make(chan result, len(addrs))
	n := 0
	ndpOn := false
	for _, a := range addrs {
		if _, ok := st.restored[a]; ok {
			continue
		}
		proto := ipv4.ProtocolNumber
		if a.Is6() {
			proto = ipv6.ProtocolNumber
			if !ndpOn {
				if err := st.enableNDPDADLocked(); err != nil {
					return fmt.Errorf("probe %s: %w", a, err)
				}
				// Off again before any address is added (see New): by
				// then every probe has reported, or been abandoned.
				defer st.disableNDPDADLocked()
				ndpOn = true
			}
		}
		// The handler runs on a gVisor timer goroutine or the one that
		// delivered the reply, with the ARP or IPv6 endpoint's lock held:
		// it only hands the result over (the channel has room for every
		// result).
		h := func(r gstack.DADResult) { results <- result{a, r} }
		disp, err := st.s.CheckDuplicateAddress(nicID, proto, toAddr(a), h)
		if err != nil {
			return fmt.Errorf("probe %s: %s", a, err)
		}
		if disp == gstack.DADDisabled {
			continue
		}
		n++
	}
	// gVisor reports after DADProbes x DADInterval; the margin covers a
	// busy machine, the limit a result that never comes.
	limit := time.NewTimer(time.Duration(st.dad.DupAddrDetectTransmits)*st.dad.RetransmitTimer + 5*time.Second)
	defer limit.Stop()
	var conflicts []result
	var failed error
	for range n {
		select {
		case r := <-results:
			switch res := r.res.(type) {
			case *gstack.DADSucceeded:
			case *gstack.DADDupAddrDetected:
				conflicts = append(conflicts, r)
			case *gstack.DADError:
				failed = errors.Join(failed, fmt.Errorf("probe %s: %s", r.ip, res.Err))
			default:
				failed = errors.Join(failed, fmt.Errorf("probe %s: %T", r.ip, res))
			}
		case <-limit.C:
			return fmt.Errorf("probe %v: no result from duplicate address detection", addrs)
		case <-st.ctx.Done():
			return fmt.Errorf("probe %v: %w", addrs, errClosed)
		}
	}
	if len(conflicts) > 0 {
		slices.SortFunc(conflicts, func(x, y result) int { return x.ip.Compare(y.ip) })
		c := conflicts[0]
		holder := c.res.(*gstack.DADDupAddrDetected).HolderLinkAddress
		by := holder.String()
		if holder == "" {
			// An NDP advertisement may leave out the holder's MAC.
			by = "another host"
		}
		st.log.Warn("address in use on the front link, refused", "ip", c.ip, "holder", by)
		return &registry.FieldError{
			Field: "ip",
			Kind:  registry.ErrConflict,
			Msg:   fmt.Sprintf("%s is already in use on the front link by %s (duplicate address)", c.ip, by),
		}
	}
	return failed
}

// ndpDAD returns the NIC's IPv6 endpoint as a duplicate address detector.
func (st *Stack) ndpDAD() (gstack.DuplicateAddressDetector, error) {
	ep, err := st.s.GetNetworkEndpoint(nicID, ipv6.ProtocolNumber)
	if err != nil {
		return nil, fmt.Errorf("ipv6 endpoint: %s", err)
	}
	d, ok := ep.(gstack.DuplicateAddressDetector)
	if !ok {
		return nil, fmt.Errorf("ipv6 endpoint %T does no duplicate address detection", ep)
	}
	return d, nil
}

// enableNDPDADLocked turns on the IPv6 endpoint's duplicate address
// detection with the stack's settings; st.mu must be held. gVisor uses one
// setting for probing an address (CheckDuplicateAddress) and for the DAD
// it runs on each address added, so it is on only while probeLocked waits
// for its probes, when no address is added.
func (st *Stack) enableNDPDADLocked() error {
	d, err := st.ndpDAD()
	if err != nil {
		return err
	}
	d.SetDADConfigurations(st.dad)
	return nil
}

// disableNDPDADLocked turns the IPv6 endpoint's duplicate address
// detection off again; st.mu must be held.
func (st *Stack) disableNDPDADLocked() {
	if d, err := st.ndpDAD(); err == nil {
		d.SetDADConfigurations(gstack.DADConfigurations{})
	}
}

// Commit implements registry.Applier: it removes the addresses that prev
// holds and next does not. Connections on them stop receiving.
func (st *Stack) Commit(prev, next *registry.Table) {
	st.mu.Lock()
	defer st.mu.Unlock()
	gone := st.diff(prev, next)
	for _, a := range gone {
		st.remove(a)
	}
	st.logAddrs("released", gone)
	st.table = next
}

// maxAddrLines is how many addresses one change logs one line each; a
// larger change (a batch of registrations) logs one line for all.
const maxAddrLines = 8

// logAddrs logs that the stack is holding or released addrs (sorted): a
// line per address, or one line with their number and range for a batch.
func (st *Stack) logAddrs(what string, addrs []netip.Addr) {
	switch {
	case len(addrs) == 0:
	case len(addrs) <= maxAddrLines:
		for _, a := range addrs {
			st.log.Info(what+" address", "ip", a)
		}
	default:
		st.log.Info(what+" addresses", "count", len(addrs), "first", addrs[0], "last", addrs[len(addrs)-1])
	}
}

// diff returns the addresses of a that b does not hold, static ones left
// out, sorted. It looks only at what the two tables do not share
// (registry.AddrDiff), so a change of one binding costs the same in a table
// of 10,000 addresses as in one of 10.
func (st *Stack) diff(a, b *registry.Table) []netip.Addr {
	d := slices.DeleteFunc(registry.AddrDiff(a, b), func(ip netip.Addr) bool {
		_, static := st.static[ip]
		return static
	})
	slices.SortFunc(d, netip.Addr.Compare)
	return d
}

// Addrs returns the addresses that the NIC holds, sorted.
func (st *Stack) Addrs() []netip.Addr {
	var out []netip.Addr
	for _, pa := range st.s.NICInfo()[nicID].ProtocolAddresses {
		if a, ok := netip.AddrFromSlice(pa.AddressWithPrefix.Address.AsSlice()); ok {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// Stats returns gVisor's counters for the stack.
func (st *Stack) Stats() tcpip.Stats { return st.s.Stats() }

// Close stops the announcements and the stack and waits for their
// goroutines, including the link endpoint's. It is idempotent.
func (st *Stack) Close() {
	st.closeOnce.Do(func() {
		st.cancel()
		st.wg.Wait()
		st.s.Close()
		st.s.Wait()
	})
}

// add holds a and starts announcing it; st.mu must be held (or st not yet
// shared).
func (st *Stack) add(a netip.Addr) error {
	bits := -1
	for _, p := range st.networks {
		if p.Contains(a) {
			bits = p.Bits()
			break
		}
	}
	if bits < 0 {
		return fmt.Errorf("hold %s: %w %v", a, ErrNotInNetworks, st.networks)
	}
	proto := ipv4.ProtocolNumber
	if a.Is6() {
		proto = ipv6.ProtocolNumber
	}
	pa := tcpip.ProtocolAddress{
		Protocol:          proto,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: toAddr(a), PrefixLen: bits},
	}
	if err := st.s.AddProtocolAddress(nicID, pa, gstack.AddressProperties{}); err != nil {
		return fmt.Errorf("hold %s: %s", a, err)
	}
	if st.garp.count > 0 {
		st.startAnnounce(a)
	}
	return nil
}

// startAnnounce sends the first announcement of a (gratuitous ARP or
// unsolicited Neighbor Advertisement) now and has the announcer send the
// others; releasing a or closing st stops them.
func (st *Stack) startAnnounce(a netip.Addr) {
	st.announcer.stop(a)
	st.announce(a)
	if cfg := st.garp; cfg.count > 1 {
		st.announcer.start(a, cfg.count-1, cfg.interval)
	}
}

// announce sends one announcement of a: gratuitous ARP for IPv4, an
// unsolicited Neighbor Advertisement for IPv6.
func (st *Stack) announce(a netip.Addr) {
	if a.Is6() {
		st.advertise(a)
		return
	}
	st.garpAnnounce(a)
}

// garpAnnounce sends one gratuitous ARP for a: an ARP request from the
// NIC's MAC to broadcast whose sender and target IP are both a (an RFC 5227
// ARP announcement; Linux updates an existing cache entry from it and
// creates none).
func (st *Stack) garpAnnounce(a netip.Addr) {
	b := make([]byte, header.ARPSize)
	h := header.ARP(b)
	h.SetIPv4OverEthernet()
	h.SetOp(header.ARPRequest)
	copy(h.HardwareAddressSender(), st.mac)
	copy(h.ProtocolAddressSender(), a.AsSlice())
	copy(h.ProtocolAddressTarget(), a.AsSlice())
	if err := st.s.WritePacketToRemote(nicID, header.EthernetBroadcastAddress, arp.ProtocolNumber, buffer.MakeWithData(b)); err != nil {
		st.log.Warn("gratuitous ARP", "ip", a, "err", err.String())
	}
}

// advertise sends one unsolicited Neighbor Advertisement for the IPv6
// address a (RFC 4861 section 7.2.6): from a to all-nodes ff02::1, hop
// limit 255, Override set and Solicited and Router clear, target a, with
// the NIC's MAC as the target link-layer address option. Linux moves an
// existing neighbour entry for a to that MAC (state STALE) and creates
// none, as with gratuitous ARP.
func (st *Stack) advertise(a netip.Addr) {
	b := neighborAdvert(toAddr(a), st.mac)
	dst := header.EthernetAddressFromMulticastIPv6Address(header.IPv6AllNodesMulticastAddress)
	if err := st.s.WritePacketToRemote(nicID, dst, ipv6.ProtocolNumber, buffer.MakeWithData(b)); err != nil {
		st.log.Warn("unsolicited neighbor advertisement", "ip", a, "err", err.String())
	}
}

// neighborAdvert returns the IPv6 packet of an unsolicited Neighbor
// Advertisement of target at mac, to all-nodes.
func neighborAdvert(target tcpip.Address, mac tcpip.LinkAddress) []byte {
	opts := header.NDPOptionsSerializer{header.NDPTargetLinkLayerAddressOption(mac)}
	size := header.ICMPv6NeighborAdvertMinimumSize + opts.Length()
	b := make([]byte, header.IPv6MinimumSize+size)
	header.IPv6(b).Encode(&header.IPv6Fields{
		PayloadLength:     uint16(size),
		TransportProtocol: header.ICMPv6ProtocolNumber,
		HopLimit:          header.NDPHopLimit,
		SrcAddr:           target,
		DstAddr:           header.IPv6AllNodesMulticastAddress,
	})
	icmp := header.ICMPv6(b[header.IPv6MinimumSize:])
	icmp.SetType(header.ICMPv6NeighborAdvert)
	na := header.NDPNeighborAdvert(icmp.MessageBody())
	na.SetOverrideFlag(true)
	na.SetTargetAddress(target)
	na.Options().Serialize(opts)
	icmp.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{
		Header: icmp,
		Src:    target,
		Dst:    header.IPv6AllNodesMulticastAddress,
	}))
	return b
}

// remove releases a and stops its announcements; st.mu must be held.
func (st *Stack) remove(a netip.Addr) {
	st.announcer.stop(a)
	if err := st.s.RemoveAddress(nicID, toAddr(a)); err != nil {
		st.log.Warn("release address", "ip", a, "err", err.String())
	}
}

// toAddr converts a netip.Addr to gVisor's address type.
func toAddr(a netip.Addr) tcpip.Address {
	if a.Is4() {
		return tcpip.AddrFrom4(a.As4())
	}
	return tcpip.AddrFrom16(a.As16())
}

// FromAddr converts gVisor's address type to a netip.Addr.
func FromAddr(a tcpip.Address) netip.Addr {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return ip
}

func prefixMask(p netip.Prefix) []byte {
	n := p.Addr().BitLen() / 8
	m := make([]byte, n)
	for i := range n {
		bits := max(0, min(8, p.Bits()-8*i))
		m[i] = byte(0xff << (8 - bits))
	}
	return m
}

func ptr[T any](v T) *T { return &v }
