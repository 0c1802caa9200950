package stack_test

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/vipmux/vipmux/internal/leakcheck"
	"github.com/vipmux/vipmux/stack"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/faketime"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// The delayed ACK tests drive one TCP connection from a raw client: the
// test writes the client's IPv4 segments into a channel endpoint (no
// Ethernet, so no ARP) and reads the gateway's segments from it. TCP's
// timers run on a manual clock, so the delayed ACK timer fires exactly
// when the test advances the clock past it, whatever the machine's load.
// The gateway sends its ACKs under the endpoint's lock, which Read takes
// too: once the application has read a segment's data, any immediate ACK
// of that data is already on the wire.

const (
	// testDelay is the delayed ACK of the tests; only the manual clock
	// measures it.
	testDelay = 40 * time.Millisecond
	// mss is the client's MSS option and segment size, that of a
	// 1500-byte MTU.
	mss        = 1460
	clientPort = 40000
	serverPort = 80
	clientISS  = 1000
)

var gatewayIP = netip.MustParseAddr("198.18.0.10")

// tcpHarness is a gateway stack with one accepted connection, its
// application side (conn) and a raw client on the wire.
type tcpHarness struct {
	t     *testing.T
	st    *stack.Stack
	wire  *channel.Endpoint
	clock *faketime.ManualClock
	conn  *gonet.TCPConn
	// seq is the client's next sequence number, ack the gateway's next
	// (what the client acknowledges).
	seq, ack uint32
}

// segment is a TCP segment that the gateway sent.
type segment struct {
	flags    header.TCPFlags
	seq, ack uint32
	payload  int
}

// isPureACK reports whether s is an ACK with nothing else.
func (s segment) isPureACK() bool { return s.flags == header.TCPFlagAck && s.payload == 0 }

// newTCPHarness builds a stack with DelayedAck delay (set at New, or by
// SetDelayedAck after New when viaSet) and completes one connection
// from the raw client. The SYN-ACK must come without the clock moving.
func newTCPHarness(t *testing.T, delay time.Duration, viaSet bool) *tcpHarness {
	t.Helper()
	leakcheck.Goroutines(t)
	h := &tcpHarness{
		t:     t,
		wire:  channel.New(64, 1500, ""),
		clock: faketime.NewManualClock(),
		seq:   clientISS,
	}
	opts := stack.Options{
		Link:     h.wire,
		Networks: []netip.Prefix{frontNet},
		Static:   []netip.Addr{gatewayIP},
		Clock:    h.clock,
		Logger:   discard,
	}
	if !viaSet {
		opts.DelayedAck = delay
	}
	st, err := stack.New(opts)
	if err != nil {
		t.Fatalf("stack.New: %v", err)
	}
	h.st = st
	t.Cleanup(func() { h.wire.Drain() })
	t.Cleanup(st.Close)
	if viaSet {
		if err := st.SetDelayedAck(delay); err != nil {
			t.Fatalf("SetDelayedAck(%v): %v", delay, err)
		}
	}
	conns := make(chan *gonet.TCPConn, 1)
	st.HandleTCP(8, func(r *tcp.ForwarderRequest) {
		var wq waiter.Queue
		ep, err := r.CreateEndpoint(&wq)
		if err != nil {
			r.Complete(true)
			return
		}
		r.Complete(false)
		conns <- gonet.NewTCPConn(&wq, ep)
	})

	h.send(header.TCPFlagSyn, nil, []byte{header.TCPOptionMSS, header.TCPOptionMSSLength, mss >> 8, mss & 0xff})
	h.seq++
	synAck := h.next()
	if synAck.flags != header.TCPFlagSyn|header.TCPFlagAck || synAck.ack != h.seq {
		t.Fatalf("answer to SYN: %+v, want SYN|ACK acknowledging %d", synAck, h.seq)
	}
	h.ack = synAck.seq + 1
	h.send(header.TCPFlagAck, nil, nil)
	select {
	case h.conn = <-conns:
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted")
	}
	t.Cleanup(func() { h.conn.Close() })
	return h
}

// send writes one client segment (sequence number h.seq, acknowledging
// h.ack) to the wire; it does not advance h.seq.
func (h *tcpHarness) send(flags header.TCPFlags, payload, opts []byte) {
	h.sendAt(h.seq, flags, payload, opts)
}

func (h *tcpHarness) sendAt(seq uint32, flags header.TCPFlags, payload, opts []byte) {
	tcpLen := header.TCPMinimumSize + len(opts)
	b := make([]byte, header.IPv4MinimumSize+tcpLen+len(payload))
	src, dst := stack.ToAddr(peerIP), stack.ToAddr(gatewayIP)
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)),
		TTL:         64,
		Protocol:    uint8(header.TCPProtocolNumber),
		SrcAddr:     src,
		DstAddr:     dst,
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	seg := header.TCP(b[header.IPv4MinimumSize:])
	var ack uint32
	if flags&header.TCPFlagAck != 0 {
		ack = h.ack
	}
	seg.Encode(&header.TCPFields{
		SrcPort:    clientPort,
		DstPort:    serverPort,
		SeqNum:     seq,
		AckNum:     ack,
		DataOffset: uint8(tcpLen),
		Flags:      flags,
		WindowSize: 65535,
	})
	copy(seg[header.TCPMinimumSize:], opts)
	copy(seg[tcpLen:], payload)
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(tcpLen+len(payload)))
	seg.SetChecksum(^seg.CalculateChecksum(checksum.Checksum(payload, sum)))
	pkt := gstack.NewPacketBuffer(gstack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
	h.wire.InjectInbound(header.IPv4ProtocolNumber, pkt)
	pkt.DecRef()
}

// sendData sends payload as one segment with PSH and advances h.seq.
func (h *tcpHarness) sendData(payload []byte) {
	h.send(header.TCPFlagAck|header.TCPFlagPsh, payload, nil)
	h.seq += uint32(len(payload))
}

// read reads n bytes on the application side.
func (h *tcpHarness) read(n int) {
	h.t.Helper()
	h.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(h.conn, make([]byte, n)); err != nil {
		h.t.Fatalf("application read of %d bytes: %v", n, err)
	}
}

// next returns the next segment the gateway sends, waiting for it (for
// what comes without the clock moving, after work of other goroutines).
func (h *tcpHarness) next() segment {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pkt := h.wire.ReadContext(ctx)
	if pkt == nil {
		h.t.Fatal("the gateway sent nothing")
	}
	return parseSegment(pkt)
}

// sent returns the segments the gateway has sent and the test not yet
// read, without waiting.
func (h *tcpHarness) sent() []segment {
	var out []segment
	for pkt := h.wire.Read(); pkt != nil; pkt = h.wire.Read() {
		out = append(out, parseSegment(pkt))
	}
	return out
}

func parseSegment(pkt *gstack.PacketBuffer) segment {
	defer pkt.DecRef()
	v := pkt.ToView()
	defer v.Release()
	s := header.TCP(header.IPv4(v.AsSlice()).Payload())
	return segment{flags: s.Flags(), seq: s.SequenceNumber(), ack: s.AckNumber(), payload: len(s.Payload())}
}

// closeWrite half-closes the gateway's side (FIN-WAIT-1) and takes its FIN
// off the wire.
func (h *tcpHarness) closeWrite() {
	h.t.Helper()
	if err := h.conn.CloseWrite(); err != nil {
		h.t.Fatalf("close write: %v", err)
	}
	if got := h.next(); got.flags != header.TCPFlagAck|header.TCPFlagFin {
		h.t.Fatalf("after CloseWrite the gateway sent %+v, want FIN", got)
	}
	h.ack++
}

// wantNothing fails unless the gateway has sent nothing since the last
// read of the wire.
func (h *tcpHarness) wantNothing(when string) {
	h.t.Helper()
	if got := h.sent(); len(got) > 0 {
		h.t.Fatalf("%s: the gateway sent %+v, want nothing", when, got)
	}
}

// wantPureACK fails unless the gateway has sent exactly one segment since
// the last read, a pure ACK of everything the client sent.
func (h *tcpHarness) wantPureACK(when string) {
	h.t.Helper()
	got := h.sent()
	if len(got) != 1 || !got[0].isPureACK() || got[0].ack != h.seq {
		h.t.Fatalf("%s: the gateway sent %+v, want one pure ACK of %d", when, got, h.seq)
	}
}

// TestDelayedAckCoalesces: the ACK of a request waits for the delay, and
// goes at once when the delay is zero (gVisor's behaviour without the
// patch), whether set in Options or by SetDelayedAck.
func TestDelayedAckCoalesces(t *testing.T) {
	for _, tc := range []struct {
		name   string
		delay  time.Duration
		viaSet bool
	}{
		{name: "off", delay: 0},
		{name: "delayed", delay: testDelay},
		{name: "delayed, set after New", delay: testDelay, viaSet: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTCPHarness(t, tc.delay, tc.viaSet)
			h.sendData([]byte("GET /"))
			h.read(5)
			if tc.delay == 0 {
				h.wantPureACK("delay off, request read")
				return
			}
			h.wantNothing("request read")
			h.clock.Advance(tc.delay - time.Microsecond)
			h.wantNothing("just before the delay")
			h.clock.Advance(time.Microsecond)
			h.wantPureACK("delay over")
			h.clock.Advance(10 * tc.delay)
			h.wantNothing("after the delayed ACK")
		})
	}
}

// TestDelayedAckOnResponse: a response written within the delay carries
// the ACK, and no pure ACK follows; the next request without a response is
// acknowledged at the delay (the timer stopped by the response arms again).
func TestDelayedAckOnResponse(t *testing.T) {
	h := newTCPHarness(t, testDelay, false)
	h.sendData([]byte("GET /"))
	h.read(5)
	if _, err := h.conn.Write([]byte("200 OK")); err != nil {
		t.Fatalf("write response: %v", err)
	}
	got := h.next()
	if got.payload != 6 || got.ack != h.seq {
		t.Fatalf("response segment %+v, want 6 bytes acknowledging %d", got, h.seq)
	}
	h.ack += uint32(got.payload)
	h.send(header.TCPFlagAck, nil, nil) // the client acknowledges the response
	h.clock.Advance(10 * testDelay)
	h.wantNothing("after the response")

	h.sendData([]byte("GET /2"))
	h.read(6)
	h.wantNothing("second request read")
	h.clock.Advance(testDelay)
	h.wantPureACK("second request, delay over")
}

// TestDelayedAckImmediate: the cases that ACK at once, with the clock
// standing still.
func TestDelayedAckImmediate(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(h *tcpHarness)
	}{
		{
			// More than one full-sized segment unacknowledged.
			name: "two full segments",
			run: func(h *tcpHarness) {
				h.sendData(make([]byte, mss))
				h.sendData(make([]byte, mss))
				h.read(2 * mss)
				h.wantPureACK("two full segments read")
			},
		},
		{
			// Out-of-order data: a duplicate ACK at once; the segment that
			// fills the hole: the ACK of both at once.
			name: "out of order, hole filled",
			run: func(h *tcpHarness) {
				h.sendAt(h.seq+100, header.TCPFlagAck|header.TCPFlagPsh, make([]byte, 100), nil)
				if got := h.next(); !got.isPureACK() || got.ack != h.seq {
					h.t.Fatalf("answer to out-of-order data: %+v, want a duplicate ACK of %d", got, h.seq)
				}
				h.sendData(make([]byte, 100))
				h.seq += 100
				h.read(200)
				h.wantPureACK("hole filled")
			},
		},
		{
			// Outside ESTABLISHED: the gateway has sent its FIN
			// (FIN-WAIT-2), the client still sends data.
			name: "data in FIN-WAIT-2",
			run: func(h *tcpHarness) {
				h.closeWrite()
				h.send(header.TCPFlagAck, nil, nil)
				h.sendData([]byte("more"))
				h.read(4)
				h.wantPureACK("data read in FIN-WAIT-2")
			},
		},
		{
			// The client's FIN after the gateway's (FIN-WAIT-2 to
			// TIME-WAIT): the last ACK, at once.
			name: "FIN in FIN-WAIT-2",
			run: func(h *tcpHarness) {
				h.closeWrite()
				h.send(header.TCPFlagAck|header.TCPFlagFin, nil, nil)
				h.seq++
				if got := h.next(); !got.isPureACK() || got.ack != h.seq {
					h.t.Fatalf("answer to the client's FIN in FIN-WAIT-2: %+v, want a pure ACK of %d", got, h.seq)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The handshake (newTCPHarness) is the first immediate case:
			// the SYN-ACK comes without the clock moving.
			tc.run(newTCPHarness(t, testDelay, false))
		})
	}
}

// TestDelayedAckFIN: the client's FIN that ends an established
// connection's receive side (the client closes first) is acknowledged as
// Linux does (tcp_fin, ping-pong mode): by the FIN of the application's own
// close when it comes within the delay, one segment where gVisor sent two,
// or by a pure ACK at the delay.
func TestDelayedAckFIN(t *testing.T) {
	for _, tc := range []struct {
		name  string
		close bool // the application closes at once on EOF
	}{
		{name: "application closes within the delay", close: true},
		{name: "application keeps its side open"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTCPHarness(t, testDelay, false)
			h.sendData([]byte("bye"))
			h.read(3)
			h.send(header.TCPFlagAck|header.TCPFlagFin, nil, nil)
			h.seq++
			h.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := h.conn.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("read after FIN: %d, %v; want EOF", n, err)
			}
			h.wantNothing("FIN read")
			if tc.close {
				if err := h.conn.Close(); err != nil {
					t.Fatalf("close: %v", err)
				}
				if got := h.next(); got.flags != header.TCPFlagAck|header.TCPFlagFin || got.ack != h.seq {
					t.Fatalf("on close the gateway sent %+v, want FIN|ACK acknowledging %d (the client's FIN)", got, h.seq)
				}
				h.clock.Advance(10 * testDelay)
				h.wantNothing("after the FIN")
				return
			}
			h.clock.Advance(testDelay - time.Microsecond)
			h.wantNothing("just before the delay")
			h.clock.Advance(time.Microsecond)
			h.wantPureACK("delay over in CLOSE-WAIT")
			h.clock.Advance(10 * testDelay)
			h.wantNothing("in CLOSE-WAIT after the ACK")
		})
	}
}

// TestDelayedAckStopsOnClose: a pending delayed ACK never fires after the
// connection ends (the timer stops with the endpoint), and no goroutine is
// left behind (leakcheck in newTCPHarness).
func TestDelayedAckStopsOnClose(t *testing.T) {
	for _, tc := range []struct {
		name string
		// end ends the connection with the ACK of "abc" pending; it
		// returns what the gateway sent meanwhile.
		end func(h *tcpHarness) []segment
		// wantFlags are the flags of what end makes the gateway send.
		wantFlags []header.TCPFlags
	}{
		{
			name: "reset by the client",
			end: func(h *tcpHarness) []segment {
				h.send(header.TCPFlagRst, nil, nil)
				h.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := h.conn.Read(make([]byte, 1)); err == nil || errors.Is(err, io.EOF) {
					h.t.Fatalf("read after RST: %v, want a reset", err)
				}
				return h.sent()
			},
		},
		{
			name: "closed by the application",
			end: func(h *tcpHarness) []segment {
				if err := h.conn.Close(); err != nil {
					h.t.Fatalf("close: %v", err)
				}
				return []segment{h.next()}
			},
			// The FIN carries the ACK of "abc".
			wantFlags: []header.TCPFlags{header.TCPFlagAck | header.TCPFlagFin},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTCPHarness(t, testDelay, false)
			h.sendData([]byte("abc"))
			h.read(3)
			h.wantNothing("data read")
			got := tc.end(h)
			if len(got) != len(tc.wantFlags) {
				t.Fatalf("on close the gateway sent %+v, want flags %v", got, tc.wantFlags)
			}
			for i, s := range got {
				if s.flags != tc.wantFlags[i] || s.ack != h.seq {
					t.Fatalf("on close the gateway sent %+v, want flags %v acknowledging %d", got, tc.wantFlags, h.seq)
				}
			}
			h.clock.Advance(10 * testDelay)
			h.wantNothing("after the connection ended")
		})
	}
}

// TestDelayedAckUnderLoss: lost segments in either direction cost one
// segment per loss, not a storm: a client that retransmits data (its ACK
// lost) gets one ACK per copy, and a response that is lost is
// retransmitted with backoff, with no pure ACK in between.
func TestDelayedAckUnderLoss(t *testing.T) {
	t.Run("client retransmits", func(t *testing.T) {
		h := newTCPHarness(t, testDelay, false)
		h.sendData([]byte("SET k v"))
		h.read(7)
		h.clock.Advance(testDelay)
		h.wantPureACK("delayed ACK")
		const copies = 3
		for i := range copies {
			h.sendAt(h.seq-7, header.TCPFlagAck|header.TCPFlagPsh, []byte("SET k v"), nil)
			if got := h.next(); !got.isPureACK() || got.ack != h.seq {
				t.Fatalf("answer to copy %d: %+v, want one ACK of %d", i+1, got, h.seq)
			}
		}
		h.clock.Advance(10 * testDelay)
		h.wantNothing("after the copies")
	})
	t.Run("response lost", func(t *testing.T) {
		h := newTCPHarness(t, testDelay, false)
		h.sendData([]byte("GET /"))
		h.read(5)
		if _, err := h.conn.Write([]byte("200 OK")); err != nil {
			t.Fatalf("write response: %v", err)
		}
		if got := h.next(); got.payload != 6 {
			t.Fatalf("response segment %+v, want 6 bytes", got)
		}
		// The client never acknowledges: 10 s in 10 ms steps.
		var resent []segment
		for range 1000 {
			h.clock.Advance(10 * time.Millisecond)
			resent = append(resent, h.sent()...)
		}
		// RTO 1 s doubling (1, 3, 7 s), and at most a tail loss probe or
		// two before it.
		if len(resent) < 1 || len(resent) > 5 {
			t.Fatalf("in 10 s without an ACK the gateway sent %d segments %+v, want 1..5 retransmissions", len(resent), resent)
		}
		for _, s := range resent {
			if s.payload != 6 || s.ack != h.seq {
				t.Fatalf("in 10 s without an ACK the gateway sent %+v, want only retransmissions of the response", resent)
			}
		}
	})
}

// TestSetDelayedAck: a negative delay is refused.
func TestSetDelayedAck(t *testing.T) {
	for _, tc := range []struct {
		name    string
		d       time.Duration
		wantErr bool
	}{
		{name: "off", d: 0},
		{name: "2ms", d: 2 * time.Millisecond},
		{name: "negative", d: -time.Millisecond, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, _ := newStack(t)
			err := st.SetDelayedAck(tc.d)
			if (err != nil) != tc.wantErr {
				t.Fatalf("SetDelayedAck(%v) = %v, want error %v", tc.d, err, tc.wantErr)
			}
		})
	}
}
