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
	"sync"
	"sync/atomic"
	"time"

	"github.com/vipmux/vipmux/registry"
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
	// DADInterval, Prepare fails with a *ConflictError (ErrAddressInUse)
	// naming the address and the MAC that answered, and holds nothing. The addresses of one Prepare are probed at once,
	// so a change waits DADProbes x DADInterval (the default 200ms) in
	// all, without the registry's write lock: other changes (switches,
	// failovers, renewals) go on meanwhile. Static addresses and
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
	// Refresh, when not zero, announces every held address again once
	// per Refresh, one address at a time, spread evenly over the
	// interval rather than in one burst: for switches whose forwarding
	// table ages the front NIC's MAC out (keepalived's
	// vrrp_garp_master_refresh). MinARPRefresh..MaxARPRefresh; config
	// default ([arp] refresh) 0, off.
	Refresh time.Duration
	// Restored are the addresses of the table restored from the state
	// file at start-up: the gateway held them before it restarted, so
	// they are the gateway's already. The first Prepare that adds one
	// holds and announces it without probing; an address added again
	// later (after it was released) is probed like any new one.
	Restored []netip.Addr
	// Holder, when set, narrows the table's addresses to those this
	// gateway holds (a cluster of gateways shares one table; each holds
	// some of its addresses). nil holds every table address. When the
	// answers of Holder change, its owner calls Rehold.
	Holder Holder
	// Logger receives address changes. Required.
	Logger *slog.Logger
}

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

	// mu guards the following fields; Prepare releases it while its
	// probes run.
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
	// refreshWake has room for one signal: garp.refresh changed.
	refreshWake chan struct{}
	// restored are the Restored addresses not yet added.
	restored map[netip.Addr]struct{}
	// ndpProbes counts the open NDP probing windows (see beginNDPLocked);
	// ndpIdle (on mu) is signalled when the last one ends.
	ndpProbes int
	ndpIdle   *sync.Cond
	// holder is Options.Holder (nil: every table address).
	holder Holder

	closeOnce sync.Once

	// dadConflicts counts the addresses that duplicate address detection
	// refused (see DADConflicts).
	dadConflicts atomic.Uint64
}

// ARPSettings are how the stack claims its IPv4 addresses on the front
// link; the fields are those of Options with the same names.
type ARPSettings struct {
	GARPCount    int
	GARPInterval time.Duration
	DADProbes    int
	DADInterval  time.Duration
	Refresh      time.Duration
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
	case s.Refresh != 0 && (s.Refresh < MinARPRefresh || s.Refresh > MaxARPRefresh):
		return fmt.Errorf("Refresh %v out of range 0 (off) or %v..%v", s.Refresh, MinARPRefresh, MaxARPRefresh)
	}
	return nil
}

func (s ARPSettings) dad() gstack.DADConfigurations {
	return gstack.DADConfigurations{DupAddrDetectTransmits: uint8(s.DADProbes), RetransmitTimer: s.DADInterval}
}

func (s ARPSettings) announce() announceConfig {
	return announceConfig{count: s.GARPCount, interval: s.GARPInterval, refresh: s.Refresh}
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
	select {
	case st.refreshWake <- struct{}{}:
	default:
	}
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
	arpSettings := ARPSettings{GARPCount: opts.GARPCount, GARPInterval: opts.GARPInterval, DADProbes: opts.DADProbes, DADInterval: opts.DADInterval, Refresh: opts.Refresh}
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
		// Prepare turns it on for the probes of new addresses only.
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
		holder:   opts.Holder,

		refreshWake: make(chan struct{}, 1),
	}
	st.ndpIdle = sync.NewCond(&st.mu)
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
	// The refresh starts once the static addresses are held: its first
	// round is every address the stack starts with.
	st.wg.Add(1)
	go func() {
		defer st.wg.Done()
		st.runRefresh(ctx)
	}()
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
		sub, err := tcpip.NewSubnet(ToAddr(p.Masked().Addr()), tcpip.MaskFromBytes(prefixMask(p)))
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
		routes = append(routes, tcpip.Route{Destination: dst, Gateway: ToAddr(opts.Router), NIC: nicID})
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
