package cluster

// Test access to unexported names.
var (
	ClaimKey = claimKey
	Rank     = rank
)
