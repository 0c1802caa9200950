// Command impair is the benchmark's WAN: it forwards Ethernet frames
// between two interfaces, both ways, holding each frame for a fixed delay
// and dropping a random share of them. The kernel here has no netem, so
// `make bench` puts impair on the client's side of both HAProxy's and
// vipmux's path to measure them under delay and loss. It is not a test and
// not part of vipmux.
//
//	impair -a iw0 -b if1 -delay 20ms -loss 0.005 -d 60s
//
// The delay applies to each direction (a round trip gains twice it); the
// loss applies to each frame in each direction. Frames keep their order.
// Both interfaces must be up and carry no IP address of the kernel's, so
// that only impair answers for them; impair reads every frame with a packet
// socket and never reads back what it sent (PACKET_IGNORE_OUTGOING). It
// stops after -d, or on SIGINT/SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// maxFrame is the largest frame forwarded: a 9000-byte MTU, its Ethernet
// header and a VLAN tag. The links impair joins carry no offloads
// (segments are cut to the MTU before they reach it).
const maxFrame = 9000 + 14 + 4

// queueLen bounds the frames in flight in one direction: at 20 ms, enough
// for ~3 Gbit/s of 1500-byte frames; beyond it frames are dropped, as a
// full router queue would.
const queueLen = 1 << 16

func main() {
	a := flag.String("a", "", "first interface")
	b := flag.String("b", "", "second interface")
	delay := flag.Duration("delay", 20*time.Millisecond, "delay added to each frame, each direction")
	loss := flag.Float64("loss", 0, "share of frames dropped in each direction, 0..1")
	dur := flag.Duration("d", time.Hour, "how long to run")
	flag.Parse()
	if *a == "" || *b == "" || *loss < 0 || *loss >= 1 || *delay < 0 {
		fmt.Fprintln(os.Stderr, "usage: impair -a IFACE -b IFACE [-delay 20ms] [-loss 0.005] [-d 60s]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *dur)
	defer cancel()
	if err := run(ctx, *a, *b, *delay, *loss); err != nil {
		fmt.Fprintln(os.Stderr, "impair:", err)
		os.Exit(1)
	}
}

// run forwards a→b and b→a until ctx ends.
func run(ctx context.Context, a, b string, delay time.Duration, loss float64) error {
	fa, err := open(a)
	if err != nil {
		return err
	}
	defer unix.Close(fa)
	fb, err := open(b)
	if err != nil {
		return err
	}
	defer unix.Close(fb)
	var (
		wg           sync.WaitGroup
		fwd, dropped atomic.Uint64
		errc         = make(chan error, 4)
	)
	for _, d := range []struct{ from, to int }{{fa, fb}, {fb, fa}} {
		q := make(chan frame, queueLen)
		wg.Go(func() { errc <- receive(ctx, d.from, q, delay, loss, &dropped) })
		wg.Go(func() { errc <- send(ctx, d.to, q, &fwd) })
	}
	// The readers wake every 200 ms (SO_RCVTIMEO) to see ctx's end.
	wg.Wait()
	close(errc)
	fmt.Fprintf(os.Stderr, "impair: %d frames forwarded, %d dropped\n", fwd.Load(), dropped.Load())
	for err := range errc {
		if err != nil && ctx.Err() == nil {
			return err
		}
	}
	return nil
}

// frame is one frame waiting for its time to leave.
type frame struct {
	at   time.Time
	data []byte
}

// open returns a packet socket that reads every frame received on the
// interface named name, and not those sent on it.
func open(name string) (int, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return -1, fmt.Errorf("interface %s: %w", name, err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return -1, fmt.Errorf("packet socket on %s: %w", name, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("PACKET_IGNORE_OUTGOING on %s: %w", name, err)
	}
	tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("SO_RCVTIMEO on %s: %w", name, err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 8<<20)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind packet socket to %s: %w", name, err)
	}
	return fd, nil
}

// receive reads frames from fd, drops a share loss of them, and queues the
// rest to leave delay after they arrived.
func receive(ctx context.Context, fd int, q chan<- frame, delay time.Duration, loss float64, dropped *atomic.Uint64) error {
	defer close(q)
	buf := make([]byte, maxFrame)
	for ctx.Err() == nil {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				continue // EAGAIN: SO_RCVTIMEO, time to look at ctx
			}
			return fmt.Errorf("receive: %w", err)
		}
		if loss > 0 && rand.Float64() < loss {
			dropped.Add(1)
			continue
		}
		select {
		case q <- frame{at: time.Now().Add(delay), data: append([]byte(nil), buf[:n]...)}:
		default:
			dropped.Add(1) // the queue is full
		}
	}
	return nil
}

// send writes each queued frame to fd once its time has come.
func send(ctx context.Context, fd int, q <-chan frame, fwd *atomic.Uint64) error {
	for f := range q {
		if w := time.Until(f.at); w > 0 {
			select {
			case <-time.After(w):
			case <-ctx.Done():
				return nil
			}
		}
		if err := unix.Send(fd, f.data, 0); err != nil {
			if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EAGAIN) {
				continue // a full device queue drops the frame, as a router would
			}
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("send: %w", err)
		}
		fwd.Add(1)
	}
	return nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
