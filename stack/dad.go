package stack

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// startProbesLocked starts duplicate address detection for the addresses
// of addrs that are not restored ones, all at once (ARP for IPv4, NDP for
// IPv6); st.mu must be held. It returns wait, which waits for the results
// (DADProbes x DADInterval) and returns a conflict error for the first
// (lowest) address that another host answered for; call it without
// st.mu, so that Commit and other Prepares do not wait for the probes.
// When ndp is true, an IPv6 probe opened the NDP probing window: call
// endNDPLocked once wait has returned.
func (st *Stack) startProbesLocked(addrs []netip.Addr) (wait func() error, ndp bool, err error) {
	if st.dad.DupAddrDetectTransmits == 0 {
		return func() error { return nil }, false, nil
	}
	type result struct {
		ip  netip.Addr
		res gstack.DADResult
	}
	results := make(chan result, len(addrs))
	n := 0
	fail := func(err error) (func() error, bool, error) {
		if ndp {
			st.endNDPLocked()
		}
		return nil, false, err
	}
	for _, a := range addrs {
		if _, ok := st.restored[a]; ok {
			continue
		}
		proto := ipv4.ProtocolNumber
		if a.Is6() {
			proto = ipv6.ProtocolNumber
			if !ndp {
				if err := st.beginNDPLocked(); err != nil {
					return fail(fmt.Errorf("probe %s: %w", a, err))
				}
				ndp = true
			}
		}
		// The handler runs on a gVisor timer goroutine or the one that
		// delivered the reply, with the ARP or IPv6 endpoint's lock held:
		// it only hands the result over (the channel has room for every
		// result).
		h := func(r gstack.DADResult) { results <- result{a, r} }
		disp, err := st.s.CheckDuplicateAddress(nicID, proto, ToAddr(a), h)
		if err != nil {
			return fail(fmt.Errorf("probe %s: %s", a, err))
		}
		if disp == gstack.DADDisabled {
			continue
		}
		n++
	}
	// gVisor reports after DADProbes x DADInterval; the margin covers a
	// busy machine, the limit a result that never comes.
	limitAfter := time.Duration(st.dad.DupAddrDetectTransmits)*st.dad.RetransmitTimer + 5*time.Second
	wait = func() error {
		limit := time.NewTimer(limitAfter)
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
			st.dadConflicts.Add(uint64(len(conflicts)))
			slices.SortFunc(conflicts, func(x, y result) int { return x.ip.Compare(y.ip) })
			c := conflicts[0]
			conflict := &ConflictError{Addr: c.ip}
			if holder := c.res.(*gstack.DADDupAddrDetected).HolderLinkAddress; holder != "" {
				// An NDP advertisement may leave out the holder's MAC.
				conflict.MAC = net.HardwareAddr(holder)
			}
			st.log.Warn("address in use on the front link, refused", "ip", c.ip, "holder", holderName(conflict.MAC))
			return conflict
		}
		return failed
	}
	return wait, ndp, nil
}

// beginNDPLocked opens an NDP probing window: the IPv6 endpoint's
// duplicate address detection is on until the last window ends; st.mu
// must be held. No address is added while a window is open (see
// addableLocked).
func (st *Stack) beginNDPLocked() error {
	if st.ndpProbes == 0 {
		if err := st.enableNDPDADLocked(); err != nil {
			return err
		}
	}
	st.ndpProbes++
	return nil
}

// endNDPLocked ends an NDP probing window that beginNDPLocked opened;
// st.mu must be held.
func (st *Stack) endNDPLocked() {
	if st.ndpProbes--; st.ndpProbes == 0 {
		st.disableNDPDADLocked()
		st.ndpIdle.Broadcast()
	}
}

// addableLocked waits, st.mu held (released while waiting), until no
// NDP probing window is open: gVisor would run its own detection on an
// address added meanwhile, keeping it tentative (deaf).
func (st *Stack) addableLocked() {
	for st.ndpProbes > 0 {
		st.ndpIdle.Wait()
	}
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
// it runs on each address added, so it is on only while probes wait (an NDP
// probing window, see beginNDPLocked), when no address is added.
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

// DADConflicts returns how many addresses duplicate address detection
// refused since New because another host on the front link answered for
// them (the metric vipmux_dad_conflicts_total).
func (st *Stack) DADConflicts() uint64 { return st.dadConflicts.Load() }
