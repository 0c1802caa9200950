package main

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
	"github.com/vipmux/vipmux/control"
)

// clusterCommand is `vipmux cluster`: the gateways of a cluster sharing
// one table through etcd (docs/cluster.md).
func clusterCommand() *cli.Command {
	return &cli.Command{
		Name:  "cluster",
		Usage: "show the gateways of the cluster, or move addresses to their preferred gateways",
		Description: `For gateways configured with [cluster] (docs/cluster.md). "status" lists the
live gateways: node, MAC, control address, priority, time left on its etcd
lease, and how many addresses it holds. "rebalance" asks every gateway to
give up the addresses that another live gateway is preferred for
(placement "spread" or "priority"), so that it takes them: addresses are
otherwise sticky, and a gateway that joins takes none. Each moved address
is dark for a moment and its connections are reset. A gateway without
[cluster] answers 404.

Examples:
   vipmux cluster status
   vipmux cluster status --json | jq '.nodes[] | {node, held}'
   vipmux cluster rebalance --gateway 198.19.0.1:7070`,
		Subcommands: []*cli.Command{
			{
				Name:  "status",
				Usage: "list the live gateways",
				Description: `Examples:
   vipmux cluster status
   vipmux cluster status --json`,
				Flags: clientFlags(&cli.BoolFlag{Name: "json", Usage: "print the API's JSON"}),
				Action: withClient(func(ctx context.Context, c *cli.Context, cl *control.Client) error {
					st, err := cl.ClusterStatus(ctx)
					if err != nil {
						return fmt.Errorf("cluster status: %w", err)
					}
					if c.Bool("json") {
						enc := json.NewEncoder(c.App.Writer)
						enc.SetIndent("", "  ")
						return enc.Encode(st)
					}
					tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "NODE\tMAC\tCONTROL\tPRIORITY\tLEASE LEFT\tHELD")
					for _, n := range st.Nodes {
						left := n.LeaseLeft
						if left == "0s" {
							left = "<1s" // etcd reports whole seconds
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d\n", n.Node, n.MAC, n.Control, n.Priority, left, n.Held)
					}
					return tw.Flush()
				}),
			},
			{
				Name:  "rebalance",
				Usage: "move addresses to their preferred gateways (their connections are reset)",
				Description: `Examples:
   vipmux cluster rebalance`,
				Flags: clientFlags(),
				Action: withClient(func(ctx context.Context, c *cli.Context, cl *control.Client) error {
					if err := cl.ClusterRebalance(ctx); err != nil {
						return fmt.Errorf("cluster rebalance: %w", err)
					}
					fmt.Fprintln(c.App.Writer, "rebalance requested: every gateway gives up the addresses another one is preferred for")
					return nil
				}),
			},
		},
	}
}
