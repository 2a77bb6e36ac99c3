package command

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/dlq"
)

// progress prints a count of a long operation on standard error.
func progress(w io.Writer, verb string) func(done, total int) {
	last := time.Now()
	return func(done, total int) {
		if total < 2 {
			return
		}
		if done == total || time.Since(last) >= time.Second {
			last = time.Now()
			fmt.Fprintf(w, "%s %d/%d\n", verb, done, total)
		}
	}
}

func dlqReplayCommand() *cli.Command {
	return &cli.Command{
		Name:  "replay",
		Usage: "send dead letters back to their channel, as new messages, and remove them",
		UsageText: `channels dlq replay [filters] [--to CHANNEL] [--dry-run] [ID...]

Examples:
   channels dlq replay --channel order.created --error-contains timeout --dry-run
   channels dlq replay 1712345678901-0 1712345678902-0
   channels dlq replay --to order.created.retry --since 1h`,
		Description: `Sends each matching dead letter (the IDs given, and/or the filters) to its original channel, or to --to, as a new message on its first attempt: payload unchanged, the x-error-*, x-original-* and x-redelivered-count headers left out, an x-replayed-from trail added. A dead letter is removed only after the broker accepted its copy (they are sent, then removed, 100 at a time): an interrupted replay never loses a message, and at worst sends those 100 twice. A replayed message is a new message of its channel: every group of the channel gets it, also the groups that handled it the first time; on Kafka --group or --original-group sends it to one group only (other adapters refuse them, exit code 3). Before anything is sent, dead letters that could not be read whole (--force), name no channel, or one out of --namespace (--any-namespace) or the queue itself stop the replay (--continue-on-error: skipped and reported).`,
		Flags: append(append(filterFlags(0),
			&cli.StringFlag{Name: "to", Usage: "send every message to this channel (without the namespace) instead of its original one"},
			&cli.StringFlag{Name: "group", Usage: "send every message to this group of its channel only (Kafka); default: every group of the channel"},
			&cli.BoolFlag{Name: "original-group", Usage: "send each message to its x-original-group only (Kafka); default: every group of the channel"},
			&cli.BoolFlag{Name: "dry-run", Usage: "list what would be sent; send and remove nothing"},
		), resendFlags()...),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			return resendAction(c, false)
		},
	}
}

func dlqMoveCommand() *cli.Command {
	return &cli.Command{
		Name:  "move",
		Usage: "move dead letters to another queue or channel, as they are",
		UsageText: `channels dlq move [filters] --to CHANNEL [--dry-run] [ID...]

Example:
   channels dlq move --channel order.created --to PARKED_ORDERS`,
		Description: `Sends each matching dead letter to --to with all its headers (it stays a dead letter there: "channels --queue PARKED_ORDERS dlq ls" lists it) and removes it, with the crash safety of replay.`,
		Flags: append(append(filterFlags(0),
			&cli.StringFlag{Name: "to", Usage: "destination queue or channel (without the namespace); required"},
			&cli.BoolFlag{Name: "dry-run", Usage: "list what would be moved; send and remove nothing"},
		), resendFlags()...),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			return resendAction(c, true)
		},
	}
}

// resendFlags are the flags of replay and move after --to and --dry-run.
func resendFlags() []cli.Flag {
	return []cli.Flag{
		forceFlag(),
		anyNamespaceFlag(),
		&cli.BoolFlag{Name: "continue-on-error", Usage: "go on past a dead letter that is refused, fails to send or is not removed; each one not done is reported (exit code 1)"},
		&cli.Float64Flag{Name: "rate", Usage: "at most this many messages sent per second (0: no bound)"},
	}
}

func anyNamespaceFlag() cli.Flag {
	return &cli.BoolFlag{Name: "any-namespace", Usage: "allow destinations out of --namespace (x-original-channel is taken as written in the dead letter)"}
}

func forceFlag() cli.Flag {
	return &cli.BoolFlag{Name: "force", Usage: "also resend dead letters that could not be read whole (sent as read: headers or payload may be missing)"}
}

// replayReport is the JSON output of replay and move.
type replayReport struct {
	Queue   string        `json:"queue"`
	DryRun  bool          `json:"dryRun"`
	Matched int           `json:"matched"`
	Sent    int           `json:"sent"`
	Removed int           `json:"removed"`
	Entries []reportEntry `json:"entries"`
	Error   string        `json:"error,omitempty"`
}

// reportEntry is one dead letter of a replayReport with what became of it
// (to, group, status, error: dlq.Outcome), in one JSON object.
type reportEntry struct {
	dlq.Entry
	dlq.Outcome
}

func (r reportEntry) MarshalJSON() ([]byte, error) {
	var m map[string]json.RawMessage
	b, err := json.Marshal(r.Entry)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	if b, err = json.Marshal(r.Outcome); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return json.Marshal(m)
}

func resendAction(c *cli.Context, move bool) error {
	f, g, q, err := dlqSelection(c)
	if err != nil {
		return err
	}
	verb := "replayed"
	if move {
		verb = "moved"
	}
	opts := dlq.ReplayOptions{DryRun: c.Bool("dry-run"), Force: c.Bool("force"), Progress: progress(c.App.ErrWriter, verb),
		Namespace: g.namespace, AnyNamespace: c.Bool("any-namespace"),
		ContinueOnError: c.Bool("continue-on-error"), Rate: c.Float64("rate")}
	if !move {
		opts.Group, opts.OriginalGroup = c.String("group"), c.Bool("original-group")
		if opts.Group != "" && opts.OriginalGroup {
			return usagef("--group and --original-group: give one")
		}
	}
	if opts.Rate < 0 {
		return usagef("--rate %g: must be 0 or more", opts.Rate)
	}
	if to := c.String("to"); to != "" {
		if opts.To, err = g.name("--to", to); err != nil {
			return err
		}
	} else if move {
		return usagef("dlq move needs --to")
	}
	return withAdapter(c, true, func(ctx context.Context, a broker.Adapter) error {
		warnUntimed(ctx, c, a, q, f)
		var res dlq.ReplayResult
		var err error
		if move {
			res, err = dlq.MoveWith(ctx, a, q, f, opts)
		} else {
			res, err = dlq.Replay(ctx, a, q, f, opts)
		}
		if g.json {
			r := replayReport{Queue: q, DryRun: opts.DryRun, Matched: len(res.Entries), Sent: res.Sent, Removed: res.Removed,
				Entries: make([]reportEntry, len(res.Entries))}
			for i, e := range res.Entries {
				r.Entries[i].Entry = e
				if i < len(res.Outcomes) {
					r.Entries[i].Outcome = res.Outcomes[i]
				}
			}
			if err != nil {
				r.Error = err.Error()
			}
			if perr := printJSON(c.App.Writer, r); perr != nil && err == nil {
				err = perr
			}
			return err
		}
		w := c.App.Writer
		if opts.DryRun {
			t := table(w)
			fmt.Fprintln(t, "ID\tTO\tERROR\tMESSAGE")
			for _, e := range res.Entries {
				to := opts.To
				if to == "" {
					to = e.OriginalChannel
				}
				fmt.Fprintf(t, "%s\t%s\t%s\t%s\n", clean(e.ID, 0), orDash(clean(to, 0)), orDash(clean(e.ErrorName, 40)), orDash(clean(e.ErrorMessage, 60)))
			}
			if err := t.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(w, "dry run: %d dead letters of %s would be %s\n", len(res.Entries), q, verb)
			return err
		}
		fmt.Fprintf(w, "%s %d of %d dead letters of %s (%d removed)\n", verb, res.Sent, len(res.Entries), q, res.Removed)
		return err
	})
}
