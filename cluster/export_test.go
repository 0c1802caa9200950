package cluster

// Test access to unexported names.
var (
	ClaimKey = claimKey
	Rank     = rank
)

// ViewNodes returns the live nodes in the current session's view.
func (c *Cluster) ViewNodes() int {
	c.mu.Lock()
	v := c.view
	c.mu.Unlock()
	if v == nil {
		return 0
	}
	return len(v.liveNodes())
}
