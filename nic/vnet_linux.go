package nic

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/rawfile"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// The virtio-net header (struct virtio_net_hdr of linux/virtio_net.h) that
// a packet socket with PACKET_VNET_HDR puts before every frame.
const (
	vnetHdrSize = 10
	// vnetNeedsCsum: the checksum is partial (CHECKSUM_PARTIAL), as on a
	// segment that GRO coalesced from segments whose checksums the kernel
	// verified, or on one sent by a local process.
	vnetNeedsCsum = 1
	// vnetDataValid: the kernel or the NIC verified the checksum
	// (CHECKSUM_UNNECESSARY).
	vnetDataValid = 2
)

// rxBatch is how many frames one recvmmsg reads.
const rxBatch = 8

// maxGROSize is the largest IP packet that GRO may coalesce for us: the
// kernel's default gro_max_size, 64 KiB (Open lowers a larger one).
const maxGROSize = 1 << 16

// rxFrameMax is the largest frame the receive path takes: a maxGROSize IP
// packet, its Ethernet header and a VLAN tag. A longer one arrives
// truncated and is dropped.
const rxFrameMax = maxGROSize + header.EthernetMinimumSize + 4

// vnetEndpoint is the front link with segmentation offloads: gVisor's
// fdbased endpoint writes through txfd, a packet socket that receives
// nothing, with a virtio-net header (host GSO, the kernel computes the TCP
// checksum); vnetEndpoint reads rxfd itself, because fdbased throws the
// virtio-net header of received frames away, and that header says whether
// the kernel has verified the frame's checksum.
//
// The receive goroutine waits for frames on Go's netpoller (a dup of rxfd
// as an *os.File, recvmmsg with MSG_DONTWAIT inside RawConn.Read), not in
// gVisor's ppoll loop: a goroutine blocked in ppoll keeps its P until the
// runtime's sysmon takes it away (20 µs or more), which left the gateway
// idle while requests waited (bench/results/TUNING.md, lever 7).
//
// Checksum trust is per frame: gVisor skips checksum verification of a
// frame only if the header carries VIRTIO_NET_HDR_F_DATA_VALID or
// VIRTIO_NET_HDR_F_NEEDS_CSUM; every other frame is verified in software.
// gVisor's NIC decides whether to verify from the link endpoint's
// Capabilities at the moment the frame is delivered, so Capabilities
// reports CapabilityRXChecksumOffload exactly while the receive goroutine
// delivers a vouched-for frame (only that goroutine delivers frames). If a
// gVisor update stopped asking per frame, the bit would read as off and
// every frame would be verified: the failure mode is slower, never unsafe
// (TestVnetChecksumTrust pins the behaviour).
type vnetEndpoint struct {
	stack.LinkEndpoint // fdbased on txfd: transmit, GSO, MTU, address

	rx  *os.File        // a dup of the receiving socket, on Go's netpoller
	rc  syscall.RawConn // rx's
	mac tcpip.LinkAddress
	log *slog.Logger

	// fail reports a receive error that ends the receive goroutine
	// (Link.Fail); check asks the link's watcher to look at once whether
	// the interface still exists (after ENETDOWN). Set before Attach.
	fail  func(error)
	check chan struct{}

	// stopping is set while Attach(nil) interrupts the receive goroutine
	// (a read deadline in the past), so that it returns instead of
	// reporting the interruption as a failure.
	stopping atomic.Bool

	// trusted is true while the receive goroutine delivers a frame whose
	// checksum the kernel vouched for.
	trusted atomic.Bool

	mu         sync.Mutex
	dispatcher stack.NetworkDispatcher
	wg         sync.WaitGroup
}

var _ stack.GSOEndpoint = (*vnetEndpoint)(nil)

// newVnetEndpoint builds the endpoint. Both fds must carry a virtio-net
// header on every message; the endpoint does not own them (it reads
// through a dup of rxfd that closeRx releases).
func newVnetEndpoint(rxfd, txfd int, mac net.HardwareAddr, mtu uint32, ifindex int, log *slog.Logger) (*vnetEndpoint, error) {
	tx, err := fdbased.New(&fdbased.Options{
		FDs:                []int{txfd},
		MTU:                mtu,
		EthernetHeader:     true,
		Address:            tcpip.LinkAddress(mac),
		PacketDispatchMode: fdbased.RecvMMsg,
		GSOMaxSize:         gsoMaxSize,
		GVisorGSOEnabled:   false, // host GSO: vnet header on every write
		InterfaceIndex:     ifindex,
		// txfd receives nothing; one idle reader, no packet fan-out.
		ProcessorsPerChannel: 1,
		PreConfigured:        true,
		IsPacketSocket:       []bool{false},
	})
	if err != nil {
		return nil, fmt.Errorf("fdbased endpoint: %w", err)
	}
	dup, err := unix.FcntlInt(uintptr(rxfd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup rx socket: %w", err)
	}
	// Nonblocking before NewFile, which then registers it with the netpoller.
	if err := unix.SetNonblock(dup, true); err != nil {
		unix.Close(dup)
		return nil, fmt.Errorf("nonblocking rx socket: %w", err)
	}
	rx := os.NewFile(uintptr(dup), "front-rx")
	rc, err := rx.SyscallConn()
	if err != nil {
		rx.Close()
		return nil, fmt.Errorf("rx socket: %w", err)
	}
	return &vnetEndpoint{LinkEndpoint: tx, rx: rx, rc: rc, mac: tcpip.LinkAddress(mac), log: log, fail: func(error) {}, check: make(chan struct{}, 1)}, nil
}

// GSOMaxSize implements stack.GSOEndpoint.
func (e *vnetEndpoint) GSOMaxSize() uint32 {
	return e.LinkEndpoint.(stack.GSOEndpoint).GSOMaxSize()
}

// SupportedGSO implements stack.GSOEndpoint.
func (e *vnetEndpoint) SupportedGSO() stack.SupportedGSO {
	return e.LinkEndpoint.(stack.GSOEndpoint).SupportedGSO()
}

// Capabilities implements stack.LinkEndpoint; see vnetEndpoint for the
// receive checksum bit.
func (e *vnetEndpoint) Capabilities() stack.LinkEndpointCapabilities {
	c := e.LinkEndpoint.Capabilities() &^ stack.CapabilityRXChecksumOffload
	if e.trusted.Load() {
		c |= stack.CapabilityRXChecksumOffload
	}
	return c
}

// Attach implements stack.LinkEndpoint: it starts (d != nil) or stops and
// waits for (d == nil) the receive goroutine.
func (e *vnetEndpoint) Attach(d stack.NetworkDispatcher) {
	e.LinkEndpoint.Attach(d)
	e.mu.Lock()
	defer e.mu.Unlock()
	if d == nil {
		if e.dispatcher != nil {
			// A deadline in the past wakes the goroutine out of the
			// netpoller; it sees stopping and returns. Attach(nil) does
			// not wait for it (Wait joins it): gVisor detaches with the
			// stack's lock held, and a frame being delivered may need
			// that lock (a RST's route).
			e.stopping.Store(true)
			_ = e.rx.SetReadDeadline(time.Unix(1, 0))
			e.dispatcher = nil
		}
		return
	}
	if e.dispatcher != nil {
		return
	}
	// A goroutine that an earlier Attach(nil) stopped is gone before the
	// next one starts on the same socket.
	e.wg.Wait()
	_ = e.rx.SetReadDeadline(time.Time{})
	e.stopping.Store(false)
	e.dispatcher = d
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		e.receive(d)
	}()
}

// IsAttached implements stack.LinkEndpoint.
func (e *vnetEndpoint) IsAttached() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.dispatcher != nil
}

// Wait implements stack.LinkEndpoint.
func (e *vnetEndpoint) Wait() {
	e.LinkEndpoint.Wait()
	e.wg.Wait()
}

// Close implements stack.LinkEndpoint.
func (e *vnetEndpoint) Close() {
	e.LinkEndpoint.Close()
}

// closeRx releases the endpoint's dup of the receiving socket; call it
// after Wait.
func (e *vnetEndpoint) closeRx() { e.rx.Close() }

// receive reads frames until Attach(nil) and delivers them to d.
func (e *vnetEndpoint) receive(d stack.NetworkDispatcher) {
	var (
		bufs [rxBatch][]byte
		iovs [rxBatch]unix.Iovec
		msgs [rxBatch]rawfile.MMsgHdr
	)
	for i := range bufs {
		bufs[i] = make([]byte, vnetHdrSize+rxFrameMax)
		iovs[i] = rawfile.IovecFromBytes(bufs[i])
		msgs[i].Msg.Iov = &iovs[i]
		msgs[i].Msg.SetIovlen(1)
	}
	var (
		n     int
		errno unix.Errno
	)
	// One closure for the goroutine's life: built per read, it would be
	// allocated per batch.
	recv := func(fd uintptr) bool {
		r, _, en := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&msgs[0])), rxBatch, unix.MSG_DONTWAIT, 0, 0)
		n, errno = int(r), en
		return en != unix.EAGAIN // EAGAIN: wait in the netpoller
	}
	for {
		for i := range msgs {
			msgs[i].Len = 0
			msgs[i].Msg.Flags = 0
		}
		err := e.rc.Read(recv)
		if err != nil {
			if e.stopping.Load() {
				return // Attach(nil)
			}
			e.fail(err)
			return
		}
		if errno != 0 {
			if errno == unix.ENETDOWN {
				// Down, or deleted: the watcher tells which.
				select {
				case e.check <- struct{}{}:
				default:
				}
			}
			if errno == unix.EINTR || errno == unix.ENETDOWN || errno == unix.ENOBUFS {
				continue // the link went down or a burst overflowed; keep reading
			}
			e.fail(errno)
			return
		}
		for i := range n {
			if msgs[i].Msg.Flags&unix.MSG_TRUNC != 0 {
				continue
			}
			e.deliver(d, bufs[i][:msgs[i].Len])
		}
	}
}

// deliver hands one received message (virtio-net header and frame) to d.
func (e *vnetEndpoint) deliver(d stack.NetworkDispatcher, msg []byte) {
	if len(msg) < vnetHdrSize+header.EthernetMinimumSize {
		return
	}
	flags := msg[0]
	frame := msg[vnetHdrSize:]
	eth := header.Ethernet(frame)
	if dst := eth.DestinationAddress(); dst != e.mac && dst[0]&0x01 == 0 {
		return // unicast to another host on the segment
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(frame)})
	defer pkt.DecRef()
	if _, ok := pkt.LinkHeader().Consume(header.EthernetMinimumSize); !ok {
		return
	}
	proto := eth.Type()
	pkt.NetworkProtocolNumber = proto
	if flags&(vnetNeedsCsum|vnetDataValid) != 0 {
		e.trusted.Store(true)
		defer e.trusted.Store(false)
	}
	d.DeliverNetworkPacket(proto, pkt)
}
