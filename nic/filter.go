package nic

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ParseFilter compiles a capture filter, a small subset of tcpdump's
// syntax: terms joined by "and", each optionally preceded by "not":
//
//	arp | ip | ip6 | tcp | udp | icmp | icmp6
//	[src|dst] host ADDR
//	[src|dst] port N
//
// "host" matches an IPv4 or IPv6 packet's source or destination, or an
// ARP packet's sender or target address; "port" a TCP or UDP port. An
// empty filter matches every frame (Match nil). tcpdump's full language
// needs libpcap, which the gateway does not link: filter more with
// tcpdump -r afterwards.
func ParseFilter(expr string) (Match, error) {
	words := strings.Fields(expr)
	if len(words) == 0 {
		return nil, nil
	}
	var terms []Match
	for len(words) > 0 {
		term, rest, err := parseTerm(words)
		if err != nil {
			return nil, fmt.Errorf("filter %q: %w", expr, err)
		}
		terms = append(terms, term)
		words = rest
		if len(words) > 0 {
			if words[0] != "and" && words[0] != "&&" {
				return nil, fmt.Errorf("filter %q: want \"and\" before %q (only \"and\" joins terms)", expr, words[0])
			}
			words = words[1:]
			if len(words) == 0 {
				return nil, fmt.Errorf("filter %q: nothing after \"and\"", expr)
			}
		}
	}
	return func(frame []byte) bool {
		for _, t := range terms {
			if !t(frame) {
				return false
			}
		}
		return true
	}, nil
}

// parseTerm parses one term at the start of words.
func parseTerm(words []string) (Match, []string, error) {
	if words[0] == "not" || words[0] == "!" {
		if len(words) == 1 {
			return nil, nil, fmt.Errorf("nothing after %q", words[0])
		}
		t, rest, err := parseTerm(words[1:])
		if err != nil {
			return nil, nil, err
		}
		return func(b []byte) bool { return !t(b) }, rest, nil
	}
	dir := ""
	if words[0] == "src" || words[0] == "dst" {
		dir, words = words[0], words[1:]
		if len(words) == 0 || (words[0] != "host" && words[0] != "port") {
			return nil, nil, fmt.Errorf("want host or port after %q", dir)
		}
	}
	switch w := words[0]; w {
	case "arp", "ip", "ip6", "tcp", "udp", "icmp", "icmp6":
		return func(b []byte) bool { return parseFrame(b).is(w) }, words[1:], nil
	case "host":
		if len(words) < 2 {
			return nil, nil, fmt.Errorf("want an address after host")
		}
		a, err := netip.ParseAddr(words[1])
		if err != nil {
			return nil, nil, fmt.Errorf("host %q: not an IP address", words[1])
		}
		a = a.Unmap()
		return func(b []byte) bool {
			f := parseFrame(b)
			return f.src.IsValid() && (dir != "dst" && f.src == a || dir != "src" && f.dst == a)
		}, words[2:], nil
	case "port":
		if len(words) < 2 {
			return nil, nil, fmt.Errorf("want a number after port")
		}
		p, err := strconv.ParseUint(words[1], 10, 16)
		if err != nil || p == 0 {
			return nil, nil, fmt.Errorf("port %q: want 1..65535", words[1])
		}
		port := uint16(p)
		return func(b []byte) bool {
			f := parseFrame(b)
			return f.hasPorts && (dir != "dst" && f.sport == port || dir != "src" && f.dport == port)
		}, words[2:], nil
	}
	return nil, nil, fmt.Errorf("unknown term %q: use arp, ip, ip6, tcp, udp, icmp, icmp6, [src|dst] host ADDR, [src|dst] port N, not, and", words[0])
}

// frameInfo is what a filter looks at in a frame.
type frameInfo struct {
	etherType    uint16
	proto        uint8 // IP protocol (IPv6: the first next header)
	src, dst     netip.Addr
	hasPorts     bool
	sport, dport uint16
}

// is reports whether f is of kind (a protocol term of ParseFilter).
func (f frameInfo) is(kind string) bool {
	switch kind {
	case "arp":
		return f.etherType == 0x0806
	case "ip":
		return f.etherType == 0x0800
	case "ip6":
		return f.etherType == 0x86dd
	case "tcp":
		return f.isIP() && f.proto == 6
	case "udp":
		return f.isIP() && f.proto == 17
	case "icmp":
		return f.etherType == 0x0800 && f.proto == 1
	case "icmp6":
		return f.etherType == 0x86dd && f.proto == 58
	}
	return false
}

func (f frameInfo) isIP() bool { return f.etherType == 0x0800 || f.etherType == 0x86dd }

// parseFrame decodes the headers of an Ethernet frame as far as b goes:
// one VLAN tag, ARP, IPv4 and IPv6 (no extension headers), TCP and UDP
// ports. What is cut short stays zero.
func parseFrame(b []byte) frameInfo {
	var f frameInfo
	if len(b) < 14 {
		return f
	}
	be := binary.BigEndian
	f.etherType, b = be.Uint16(b[12:]), b[14:]
	if f.etherType == 0x8100 && len(b) >= 4 {
		f.etherType, b = be.Uint16(b[2:]), b[4:]
	}
	var l4 []byte
	switch f.etherType {
	case 0x0806: // ARP for IPv4 over Ethernet: sender and target IP
		if len(b) >= 28 && be.Uint16(b[2:]) == 0x0800 && b[4] == 6 && b[5] == 4 {
			f.src = netip.AddrFrom4([4]byte(b[14:18]))
			f.dst = netip.AddrFrom4([4]byte(b[24:28]))
		}
		return f
	case 0x0800:
		if len(b) < 20 || b[0]>>4 != 4 {
			return f
		}
		ihl := int(b[0]&0x0f) * 4
		f.proto = b[9]
		f.src = netip.AddrFrom4([4]byte(b[12:16]))
		f.dst = netip.AddrFrom4([4]byte(b[16:20]))
		// Only the first fragment has the ports.
		if be.Uint16(b[6:])&0x1fff == 0 && len(b) >= ihl {
			l4 = b[ihl:]
		}
	case 0x86dd:
		if len(b) < 40 || b[0]>>4 != 6 {
			return f
		}
		f.proto = b[6]
		f.src = netip.AddrFrom16([16]byte(b[8:24]))
		f.dst = netip.AddrFrom16([16]byte(b[24:40]))
		l4 = b[40:]
	default:
		return f
	}
	if (f.proto == 6 || f.proto == 17) && len(l4) >= 4 {
		f.hasPorts, f.sport, f.dport = true, be.Uint16(l4[0:]), be.Uint16(l4[2:])
	}
	return f
}
