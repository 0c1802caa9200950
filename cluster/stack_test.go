package cluster_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/vipmux/vipmux/cluster"
	"github.com/vipmux/vipmux/nic"
	"github.com/vipmux/vipmux/registry"
	"github.com/vipmux/vipmux/stack"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

const (
	gwMAC     = tcpip.LinkAddress("\x02\x00\x00\x00\x00\x0a")
	clientMAC = tcpip.LinkAddress("\x02\x00\x00\x00\x00\x02")
)

var clientIP = netip.MustParseAddr("198.18.1.250")

// realGateway is a gateway assembled as gateway.New would with a cluster:
// registry → stack (cluster as its Holder) → fence (cluster as its Gate)
// → a fake Ethernet wire that the test reads and writes.
type realGateway struct {
	cl   *cluster.Cluster
	st   *stack.Stack
	wire *channel.Endpoint
	reg  *registry.Registry

	// mu serializes the test's use of the wire.
	mu sync.Mutex
}

func startRealGateway(t *testing.T, name, endpoint string, ips []netip.Addr) *realGateway {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	net := netip.MustParsePrefix("198.18.1.0/24")
	reg, err := registry.New(registry.Options{Networks: []netip.Prefix{net}, AllowLoopbackBackends: true})
	if err != nil {
		t.Fatalf("registry.New: %v", err)
	}
	cl, err := cluster.New(cluster.Options{
		Endpoints: []string{endpoint}, Node: name, Lease: 2 * time.Second,
		TableAddrs:  func() map[netip.Addr]struct{} { return reg.Table().Addrs() },
		DialTimeout: 500 * time.Millisecond, Logger: log,
	})
	if err != nil {
		t.Fatalf("cluster.New: %v", err)
	}
	wire := channel.New(256, 1500, gwMAC)
	st, err := stack.New(stack.Options{
		Link:     nic.NewFence(ethernet.New(wire), cl),
		Networks: []netip.Prefix{net},
		Holder:   cl,
		Logger:   log,
	})
	if err != nil {
		t.Fatalf("stack.New: %v", err)
	}
	t.Cleanup(func() { wire.Drain() })
	t.Cleanup(st.Close)
	if err := reg.SetApplier(st); err != nil {
		t.Fatalf("SetApplier: %v", err)
	}
	reg.Watch(func(_, _ *registry.Table) { cl.TableChanged() })
	for _, ip := range ips {
		if _, err := reg.Register(registry.Registration{Name: "srv", IP: ip, Backend: netip.MustParseAddrPort("127.0.0.1:9")}); err != nil {
			t.Fatalf("Register %v: %v", ip, err)
		}
	}
	if err := cl.Start(context.Background(), st); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(cl.Close) // runs before st.Close
	return &realGateway{cl: cl, st: st, wire: wire, reg: reg}
}

// answers asks the gateway's wire who has ip and reports whether an ARP
// reply for ip came back.
func (g *realGateway) answers(ip netip.Addr) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.wire.Drain()
	b := make([]byte, header.EthernetMinimumSize+header.ARPSize)
	header.Ethernet(b).Encode(&header.EthernetFields{SrcAddr: clientMAC, DstAddr: header.EthernetBroadcastAddress, Type: header.ARPProtocolNumber})
	a := header.ARP(b[header.EthernetMinimumSize:])
	a.SetIPv4OverEthernet()
	a.SetOp(header.ARPRequest)
	copy(a.HardwareAddressSender(), clientMAC)
	copy(a.ProtocolAddressSender(), clientIP.AsSlice())
	copy(a.ProtocolAddressTarget(), ip.AsSlice())
	req := gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
	g.wire.InjectInbound(header.ARPProtocolNumber, req)
	req.DecRef()
	// gVisor answers ARP on the injecting goroutine: a reply is queued by now.
	answered := false
	for pkt := g.wire.Read(); pkt != nil; pkt = g.wire.Read() {
		v := pkt.ToView()
		f := v.AsSlice()
		if len(f) >= header.EthernetMinimumSize+header.ARPSize && header.Ethernet(f).Type() == header.ARPProtocolNumber {
			r := header.ARP(f[header.EthernetMinimumSize:])
			if r.IsValid() && r.Op() == header.ARPReply && bytes.Equal(r.ProtocolAddressSender(), ip.AsSlice()) {
				answered = true
			}
		}
		v.Release()
		pkt.DecRef()
	}
	return answered
}

// TestFencedStackStopsAnswering runs gw-a as a whole (registry, stack with
// the cluster as Holder, fence around the link) and cuts it off from etcd:
// gw-a answers ARP for the addresses it holds, and at the moment gw-b's
// stack takes each of them over, gw-a no longer answers.
func TestFencedStackStopsAnswering(t *testing.T) {
	ep := startEtcd(t)
	px := startProxy(t, ep)
	var ips []netip.Addr
	for a, i := netip.MustParseAddr("198.18.1.1"), 0; i < 6; a, i = a.Next(), i+1 {
		ips = append(ips, a)
	}
	table := func() map[netip.Addr]struct{} {
		m := map[netip.Addr]struct{}{}
		for _, a := range ips {
			m[a] = struct{}{}
		}
		return m
	}
	a := startRealGateway(t, "gw-a", px.url(), ips)
	waitFor(t, "gw-a answers ARP for every address", waitLimit, func() bool {
		for _, ip := range ips {
			if !a.answers(ip) {
				return false
			}
		}
		return true
	})
	b := startGateway(t, "gw-b", ep, table, nil)

	var mu sync.Mutex
	var twice []netip.Addr
	b.st.mu.Lock()
	b.st.onAdd = func(added []netip.Addr) {
		for _, ip := range added {
			if a.answers(ip) {
				mu.Lock()
				twice = append(twice, ip)
				mu.Unlock()
			}
		}
	}
	b.st.mu.Unlock()
	px.cutOff()
	waitFor(t, "gw-b holds every address", waitLimit, func() bool { return len(b.st.holding()) == len(ips) })
	mu.Lock()
	defer mu.Unlock()
	if len(twice) > 0 {
		t.Errorf("gw-a still answered ARP for %v when gw-b took them over", twice)
	}
	for _, ip := range ips {
		if a.answers(ip) {
			t.Errorf("gw-a answers ARP for %v after gw-b took it over", ip)
		}
	}
}
