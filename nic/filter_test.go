package nic

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Test frames: only the fields the filter reads are filled in.
var (
	arpFrame = func() []byte {
		b := make([]byte, 14+28)
		binary.BigEndian.PutUint16(b[12:], 0x0806)
		a := b[14:]
		binary.BigEndian.PutUint16(a[0:], 1)
		binary.BigEndian.PutUint16(a[2:], 0x0800)
		a[4], a[5] = 6, 4
		copy(a[14:], netip.MustParseAddr("198.18.0.1").AsSlice())
		copy(a[24:], netip.MustParseAddr("198.18.0.10").AsSlice())
		return b
	}()
	// tcpFrame is 198.18.0.1:40000 > 198.18.0.10:8080, behind a VLAN tag.
	tcpFrame = func() []byte {
		b := make([]byte, 18+20+20)
		binary.BigEndian.PutUint16(b[12:], 0x8100)
		binary.BigEndian.PutUint16(b[16:], 0x0800)
		ip := b[18:]
		ip[0], ip[9] = 0x45, 6
		copy(ip[12:], netip.MustParseAddr("198.18.0.1").AsSlice())
		copy(ip[16:], netip.MustParseAddr("198.18.0.10").AsSlice())
		binary.BigEndian.PutUint16(ip[20:], 40000)
		binary.BigEndian.PutUint16(ip[22:], 8080)
		return b
	}()
	// udp6Frame is [2001:db8:18::1]:53 > [2001:db8:18::10]:5353.
	udp6Frame = func() []byte {
		b := make([]byte, 14+40+8)
		binary.BigEndian.PutUint16(b[12:], 0x86dd)
		ip := b[14:]
		ip[0], ip[6] = 0x60, 17
		copy(ip[8:], netip.MustParseAddr("2001:db8:18::1").AsSlice())
		copy(ip[24:], netip.MustParseAddr("2001:db8:18::10").AsSlice())
		binary.BigEndian.PutUint16(ip[40:], 53)
		binary.BigEndian.PutUint16(ip[42:], 5353)
		return b
	}()
)

func TestParseFilter(t *testing.T) {
	tests := []struct {
		filter  string
		wantErr string
		// want says which of arp, tcp, udp6 the filter matches.
		want [3]bool
	}{
		{filter: "", want: [3]bool{true, true, true}},
		{filter: "arp", want: [3]bool{true, false, false}},
		{filter: "not arp", want: [3]bool{false, true, true}},
		{filter: "tcp", want: [3]bool{false, true, false}},
		{filter: "udp", want: [3]bool{false, false, true}},
		{filter: "ip", want: [3]bool{false, true, false}},
		{filter: "ip6", want: [3]bool{false, false, true}},
		{filter: "host 198.18.0.10", want: [3]bool{true, true, false}},
		{filter: "src host 198.18.0.10", want: [3]bool{false, false, false}},
		{filter: "dst host 198.18.0.10", want: [3]bool{true, true, false}},
		{filter: "host 2001:db8:18::1", want: [3]bool{false, false, true}},
		{filter: "port 8080", want: [3]bool{false, true, false}},
		{filter: "src port 8080", want: [3]bool{false, false, false}},
		{filter: "tcp and dst port 8080 and host 198.18.0.1", want: [3]bool{false, true, false}},
		{filter: "port 53 and ! tcp", want: [3]bool{false, false, true}},
		{filter: "tcp or udp", wantErr: `want "and" before "or"`},
		{filter: "host", wantErr: "want an address"},
		{filter: "host example.com", wantErr: "not an IP address"},
		{filter: "port 0", wantErr: "want 1..65535"},
		{filter: "port 70000", wantErr: "want 1..65535"},
		{filter: "src tcp", wantErr: "want host or port"},
		{filter: "tcp and", wantErr: "nothing after"},
		{filter: "not", wantErr: "nothing after"},
		{filter: "vlan", wantErr: "unknown term"},
	}
	for _, tc := range tests {
		t.Run(tc.filter, func(t *testing.T) {
			m, err := ParseFilter(tc.filter)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseFilter(%q) error = %v, want one containing %q", tc.filter, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseFilter(%q): %v", tc.filter, err)
			}
			var got [3]bool
			for i, f := range [][]byte{arpFrame, tcpFrame, udp6Frame} {
				got[i] = m == nil || m(f)
			}
			if got != tc.want {
				t.Errorf("ParseFilter(%q) matches [arp tcp udp6] = %v, want %v", tc.filter, got, tc.want)
			}
			// Frames cut short never panic.
			if m != nil {
				for _, f := range [][]byte{arpFrame, tcpFrame, udp6Frame} {
					for n := range len(f) {
						m(f[:n])
					}
				}
			}
		})
	}
}

// TestRecord: a recording started and stopped while frames flow gets
// only the frames in between that its filter takes; another recording
// runs beside it.
func TestRecord(t *testing.T) {
	wire := channel.New(8, 1500, ourMAC)
	c, err := NewCapture(ethernet.New(wire), nil, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	var d dispatcher
	c.Attach(&d)
	inject := func(f []byte) {
		wire.InjectInbound(0, stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(f)}))
	}
	inject(tcpFrame) // no recording: passes, recorded nowhere
	m, err := ParseFilter("tcp")
	if err != nil {
		t.Fatal(err)
	}
	var all, tcp syncBuffer
	ra, err := c.Record(&all, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := c.Record(&tcp, 64, m)
	if err != nil {
		t.Fatal(err)
	}
	inject(arpFrame)
	inject(tcpFrame)
	if err := rt.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	inject(tcpFrame) // after rt stopped: only ra
	if err := c.Stop(); err != nil {
		t.Fatalf("Capture.Stop: %v", err)
	}
	inject(arpFrame) // after everything stopped
	if d.n != 5 {
		t.Errorf("frames handed up = %d, want 5", d.n)
	}
	if _, _, recs := readPcap(t, all.Bytes()); len(recs) != 3 || ra.Frames() != 3 {
		t.Errorf("recording of every frame: %d records, Frames() = %d; want 3", len(recs), ra.Frames())
	}
	snap, _, recs := readPcap(t, tcp.Bytes())
	if snap != 64 || len(recs) != 1 || string(recs[0].Data) != string(tcpFrame) {
		t.Errorf("recording of tcp: snaplen %d, records %v; want 64 and the one TCP frame", snap, recs)
	}
	if _, err := c.Record(&all, 0, nil); err == nil {
		t.Errorf("Record after Stop = nil error, want ErrCaptureStopped")
	}
	c.Attach(nil)
}
