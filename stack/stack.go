// Package stack builds and owns vipmux's userspace TCP/IP stack (gVisor
// netstack): one NIC on the front link endpoint, the addresses that the
// registry's table holds (added and removed as the table changes), ARP and
// NDP answered by gVisor itself for exactly those addresses, routes for the
// front networks, and the TCP options of the data path.
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
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
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
	// Logger receives address changes. Required.
	Logger *slog.Logger
}

// Stack is the gateway's userspace stack with its one front NIC.
type Stack struct {
	s        *gstack.Stack
	log      *slog.Logger
	networks []netip.Prefix
	static   map[netip.Addr]struct{}

	// mu serializes Apply (the registry already does; this guards the
	// stack against other callers).
	mu        sync.Mutex
	closeOnce sync.Once
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
	s := gstack.New(gstack.Options{
		NetworkProtocols:   []gstack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol, arp.NewProtocol},
		TransportProtocols: []gstack.TransportProtocolFactory{tcp.NewProtocol},
		HandleLocal:        false,
	})
	st := &Stack{s: s, log: opts.Logger, networks: opts.Networks, static: map[netip.Addr]struct{}{}}
	if err := st.configure(opts); err != nil {
		s.Close()
		s.Wait()
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
	for _, a := range opts.Static {
		if err := st.add(a); err != nil {
			return err
		}
		st.static[a] = struct{}{}
	}
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
// holds and prev does not. If an add fails, the addresses added so far are
// removed again.
func (st *Stack) Prepare(prev, next *registry.Table) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	var added []netip.Addr
	for _, a := range st.diff(next, prev) {
		if err := st.add(a); err != nil {
			for _, b := range added {
				st.remove(b)
			}
			return err
		}
		added = append(added, a)
	}
	return nil
}

// Commit implements registry.Applier: it removes the addresses that prev
// holds and next does not. Connections on them stop receiving.
func (st *Stack) Commit(prev, next *registry.Table) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, a := range st.diff(prev, next) {
		st.remove(a)
	}
}

// diff returns the addresses of a that b does not hold, static ones left
// out.
func (st *Stack) diff(a, b *registry.Table) []netip.Addr {
	in, out := a.Addrs(), b.Addrs()
	var d []netip.Addr
	for ip := range in {
		_, held := out[ip]
		_, static := st.static[ip]
		if !held && !static {
			d = append(d, ip)
		}
	}
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

// Close stops the stack and waits for its goroutines, including the link
// endpoint's. It is idempotent.
func (st *Stack) Close() {
	st.closeOnce.Do(func() {
		st.s.Close()
		st.s.Wait()
	})
}

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
	st.log.Info("holding address", "ip", a)
	return nil
}

func (st *Stack) remove(a netip.Addr) {
	if err := st.s.RemoveAddress(nicID, toAddr(a)); err != nil {
		st.log.Warn("release address", "ip", a, "err", err.String())
		return
	}
	st.log.Info("released address", "ip", a)
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
