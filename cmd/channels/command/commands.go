package command

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/urfave/cli/v2"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/dlq"
)

var lookupEnv = os.Getenv

// filterFlags select dead letters.
func filterFlags(defaultLimit int) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "channel", Aliases: []string{"c"}, Usage: "original channel (without the namespace)"},
		&cli.StringFlag{Name: "since", Usage: "dead-lettered at or after: RFC 3339 time, date (2006-01-02, midnight local time) or age (2h, 30m, 7d); dead letters with no time never match"},
		&cli.StringFlag{Name: "error-contains", Aliases: []string{"e"}, Usage: "error message or name contains (case-insensitive)"},
		&cli.IntFlag{Name: "limit", Value: defaultLimit, Usage: "at most this many dead letters (0: all)"},
	}
}

// filterOf reads the filter flags and the IDs given as arguments.
func filterOf(c *cli.Context) (dlq.Filter, error) {
	if err := noFlagsAfterArgs(c); err != nil {
		return dlq.Filter{}, err
	}
	g := globalsOf(c)
	f := dlq.Filter{ErrorContains: c.String("error-contains"), Limit: c.Int("limit"), IDs: c.Args().Slice()}
	if f.Limit < 0 {
		return f, usagef("--limit %d: must be 0 or more", f.Limit)
	}
	if ch := c.String("channel"); ch != "" {
		full, err := g.name("--channel", ch)
		if err != nil {
			return f, err
		}
		f.Channel = full
	}
	if s := c.String("since"); s != "" {
		t, err := parseSince(s, time.Now())
		if err != nil {
			return f, err
		}
		f.Since = t
	}
	return f, nil
}

// parseSince reads an RFC 3339 time, a date (midnight, local time) or an
// age (a Go duration, or whole days: 7d).
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	if n, ok := strings.CutSuffix(s, "d"); ok {
		if days, err := strconv.Atoi(n); err == nil && days >= 0 && days <= 100000 {
			return now.AddDate(0, 0, -days), nil
		}
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation("2006-01-02", s, time.Local); err == nil {
		return t, nil
	}
	return time.Time{}, usagef("--since %q: want an RFC 3339 time (2006-01-02T15:04:05Z), a date (2006-01-02, local time) or an age (2h, 7d)", s)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// clean makes untrusted text safe for a terminal: control and other
// non-printable characters are escaped, and it is cut to max bytes
// (0: no cut).
func clean(s string, max int) string {
	var b strings.Builder
	for _, r := range s {
		if unicode.IsPrint(r) || r == ' ' {
			b.WriteRune(r)
		} else {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
		if max > 0 && b.Len() >= max {
			return b.String() + "…"
		}
	}
	return b.String()
}

func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

func timeText(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func attemptsText(n int) string {
	if n == 0 {
		return "-"
	}
	return strconv.Itoa(n)
}

func lsCommand() *cli.Command {
	return &cli.Command{
		Name:  "ls",
		Usage: "list channels with their groups and backlogs",
		UsageText: `channels ls

Example:
   channels --namespace shop ls`,
		Description:  "Lists the channels of --namespace (every channel without one): messages stored (-1: stored per group), and per group the lag (not yet delivered) and pending (delivered, not acknowledged).",
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usagef("ls takes no arguments")
			}
			return withAdapter(c, false, func(ctx context.Context, a broker.Adapter) error {
				cs, err := dlq.Channels(ctx, a, globalsOf(c).namespace)
				if err != nil {
					return err
				}
				if globalsOf(c).json {
					if cs == nil {
						cs = []broker.ChannelInfo{}
					}
					return printJSON(c.App.Writer, cs)
				}
				t := table(c.App.Writer)
				fmt.Fprintln(t, "CHANNEL\tMESSAGES\tGROUP\tLAG\tPENDING")
				for _, ch := range cs {
					if len(ch.Groups) == 0 {
						fmt.Fprintf(t, "%s\t%d\t-\t-\t-\n", clean(ch.Name, 0), ch.Messages)
					}
					for _, g := range ch.Groups {
						fmt.Fprintf(t, "%s\t%d\t%s\t%d\t%d\n", clean(ch.Name, 0), ch.Messages, clean(g.Name, 0), g.Lag, g.Pending)
					}
				}
				return t.Flush()
			})
		},
	}
}

func dlqLsCommand() *cli.Command {
	return &cli.Command{
		Name:  "ls",
		Usage: "list dead letters",
		UsageText: `channels dlq ls [--channel C] [--since T] [--error-contains S] [--limit N]

Example:
   channels dlq ls --channel order.created --since 2h --error-contains timeout`,
		Description:  "Lists the dead letters of the queue, oldest first, without taking them: id, original channel and group, error name and message, attempts and time.",
		Flags:        filterFlags(100),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usagef("dlq ls takes no arguments (dlq show ID shows one dead letter)")
			}
			f, err := filterOf(c)
			if err != nil {
				return err
			}
			g := globalsOf(c)
			q, err := g.dlqName()
			if err != nil {
				return err
			}
			return withAdapter(c, false, func(ctx context.Context, a broker.Adapter) error {
				es, err := dlq.List(ctx, a, q, f)
				if err != nil {
					return err
				}
				warnUntimed(ctx, c, a, q, f)
				if f.Limit > 0 && len(es) == f.Limit {
					// On standard error, with --json too: the list may be cut.
					defer fmt.Fprintf(c.App.ErrWriter, "showing the first %d; --limit 0 for all\n", f.Limit)
				}
				if g.json {
					if es == nil {
						es = []dlq.Entry{}
					}
					return printJSON(c.App.Writer, es)
				}
				t := table(c.App.Writer)
				fmt.Fprintln(t, "ID\tCHANNEL\tGROUP\tERROR\tMESSAGE\tATTEMPTS\tTIME")
				for _, e := range es {
					name, msg := e.ErrorName, e.ErrorMessage
					if e.DecodeError != "" {
						// The failure is unknown: say why instead.
						name, msg = "(unreadable)", e.DecodeError
					}
					fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", clean(e.ID, 0), orDash(clean(e.OriginalChannel, 0)),
						orDash(clean(e.OriginalGroup, 0)), orDash(clean(name, 40)), orDash(clean(msg, 60)),
						attemptsText(e.Attempts), timeText(e.Time))
				}
				return t.Flush()
			})
		},
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func dlqShowCommand() *cli.Command {
	return &cli.Command{
		Name:  "show",
		Usage: "show one dead letter: headers and decoded payload",
		UsageText: `channels dlq show ID

Example:
   channels dlq show 1712345678901-0`,
		Description:  "Shows the dead letter ID: its headers, and its payload as indented JSON, decoded MessagePack, quoted text or a hex dump (the first 64 KiB).",
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("dlq show takes one ID")
			}
			g := globalsOf(c)
			q, err := g.dlqName()
			if err != nil {
				return err
			}
			return withAdapter(c, false, func(ctx context.Context, a broker.Adapter) error {
				e, err := dlq.Get(ctx, a, q, c.Args().First())
				if err != nil {
					return err
				}
				if g.json {
					return printJSON(c.App.Writer, e)
				}
				w := c.App.Writer
				t := table(w)
				fmt.Fprintf(t, "id:\t%s\n", clean(e.ID, 0))
				fmt.Fprintf(t, "queue:\t%s\n", q)
				fmt.Fprintf(t, "channel:\t%s\n", orDash(clean(e.OriginalChannel, 0)))
				fmt.Fprintf(t, "group:\t%s\n", orDash(clean(e.OriginalGroup, 0)))
				fmt.Fprintf(t, "error:\t%s\n", orDash(clean(strings.TrimPrefix(e.ErrorName+": "+e.ErrorMessage, ": "), 0)))
				fmt.Fprintf(t, "attempts:\t%s\n", attemptsText(e.Attempts))
				fmt.Fprintf(t, "time:\t%s\n", timeText(e.Time))
				if e.Key != nil {
					fmt.Fprintf(t, "key:\t%s\n", clean(string(e.Key), 4096))
				}
				if e.DecodeError != "" {
					fmt.Fprintf(t, "unreadable:\t%s (replay and move refuse it without --force)\n", clean(e.DecodeError, 0))
				}
				if err := t.Flush(); err != nil {
					return err
				}
				fmt.Fprintln(w, "headers:")
				keys := make([]string, 0, len(e.Headers))
				for k := range e.Headers {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				t = table(w)
				for _, k := range keys {
					fmt.Fprintf(t, "  %s:\t%s\n", clean(k, 0), clean(e.Headers[k], 4096))
				}
				if err := t.Flush(); err != nil {
					return err
				}
				format, text := dlq.FormatPayload(e.Payload, 0)
				fmt.Fprintf(w, "payload (%s, %d bytes):\n%s\n", format, len(e.Payload), cleanLines(text))
				return nil
			})
		},
	}
}

// warnUntimed says on standard error how many dead letters --since left
// out because their time is unknown.
func warnUntimed(ctx context.Context, c *cli.Context, a broker.Adapter, q string, f dlq.Filter) {
	if n, err := dlq.Untimed(ctx, a, q, f); err == nil && n > 0 {
		fmt.Fprintf(c.App.ErrWriter, "%d dead letters with no time left out by --since\n", n)
	}
}

// cleanLines is clean for text of several lines.
func cleanLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = clean(l, 0)
	}
	return strings.Join(lines, "\n")
}

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
	f, err := filterOf(c)
	if err != nil {
		return err
	}
	g := globalsOf(c)
	q, err := g.dlqName()
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

func dlqPurgeCommand() *cli.Command {
	return &cli.Command{
		Name:  "purge",
		Usage: "remove dead letters",
		UsageText: `channels dlq purge [filters] (--yes | --dry-run) [ID...]

Example:
   channels dlq purge --channel order.created --since 2026-01-01 --yes`,
		Description: "Removes the matching dead letters (the IDs given, and/or the filters; all of them without any). Refuses to run without --yes; --dry-run lists what would be removed.",
		Flags: append(filterFlags(0),
			&cli.BoolFlag{Name: "yes", Aliases: []string{"y"}, Usage: "confirm the removal"},
			&cli.BoolFlag{Name: "dry-run", Usage: "list what would be removed; remove nothing"},
		),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			f, err := filterOf(c)
			if err != nil {
				return err
			}
			dry := c.Bool("dry-run")
			if !c.Bool("yes") && !dry {
				return usagef("dlq purge removes dead letters for good: add --yes (see what matches with --dry-run)")
			}
			g := globalsOf(c)
			q, err := g.dlqName()
			if err != nil {
				return err
			}
			if dry {
				return withAdapter(c, true, func(ctx context.Context, a broker.Adapter) error {
					es, err := dlq.List(ctx, a, q, f)
					if err != nil {
						return err
					}
					warnUntimed(ctx, c, a, q, f)
					err = missingIDs(q, f, es)
					if g.json {
						if es == nil {
							es = []dlq.Entry{}
						}
						if perr := printJSON(c.App.Writer, map[string]any{"queue": q, "dryRun": true, "matched": len(es), "removed": 0, "entries": es}); perr != nil && err == nil {
							err = perr
						}
						return err
					}
					t := table(c.App.Writer)
					fmt.Fprintln(t, "ID\tCHANNEL\tERROR\tMESSAGE")
					for _, e := range es {
						fmt.Fprintf(t, "%s\t%s\t%s\t%s\n", clean(e.ID, 0), orDash(clean(e.OriginalChannel, 0)), orDash(clean(e.ErrorName, 40)), orDash(clean(e.ErrorMessage, 60)))
					}
					if ferr := t.Flush(); ferr != nil && err == nil {
						err = ferr
					}
					fmt.Fprintf(c.App.Writer, "dry run: %d dead letters of %s would be removed\n", len(es), q)
					return err
				})
			}
			return withAdapter(c, true, func(ctx context.Context, a broker.Adapter) error {
				warnUntimed(ctx, c, a, q, f)
				n, err := dlq.Purge(ctx, a, q, f)
				if g.json {
					if perr := printJSON(c.App.Writer, map[string]any{"queue": q, "removed": n}); perr != nil && err == nil {
						err = perr
					}
					return err
				}
				fmt.Fprintf(c.App.Writer, "removed %d dead letters of %s\n", n, q)
				return err
			})
		},
	}
}

// missingIDs is the error (broker.ErrNotFound) of the IDs of f not among
// es, as purge reports them.
func missingIDs(q string, f dlq.Filter, es []dlq.Entry) error {
	if len(f.IDs) == 0 || (f.Limit > 0 && len(es) >= f.Limit) {
		return nil
	}
	found := map[string]bool{}
	for _, e := range es {
		found[e.ID] = true
	}
	var missing []string
	for _, id := range f.IDs {
		if !found[id] {
			found[id] = true
			missing = append(missing, strconv.Quote(id))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%w: dead letters not in %s (or not matching the filter): %s", broker.ErrNotFound, q, strings.Join(missing, ", "))
}

func rmMessageCommand() *cli.Command {
	return &cli.Command{
		Name:  "rm-message",
		Usage: "delete one stored message of a channel",
		UsageText: `channels rm-message CHANNEL ID

Example:
   channels rm-message order.created 1712345678901-0`,
		Description:  "Deletes the message ID from CHANNEL (without the namespace) where the broker can: Redis (XDEL), NATS JetStream (message delete), memory. Other brokers answer with exit code 3.",
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			if c.NArg() != 2 {
				return usagef("rm-message takes CHANNEL and ID")
			}
			g := globalsOf(c)
			ch, err := g.name("CHANNEL", c.Args().Get(0))
			if err != nil {
				return err
			}
			id := c.Args().Get(1)
			return withAdapter(c, false, func(ctx context.Context, a broker.Adapter) error {
				if err := dlq.RemoveMessage(ctx, a, ch, id); err != nil {
					return err
				}
				if g.json {
					return printJSON(c.App.Writer, map[string]string{"channel": ch, "removed": id})
				}
				fmt.Fprintf(c.App.Writer, "removed message %s of %s\n", clean(id, 0), ch)
				return nil
			})
		},
	}
}

// tailLine is the JSON output of tail, one object per line.
type tailLine struct {
	ID      string            `json:"id"`
	Channel string            `json:"channel"`
	Time    time.Time         `json:"time,omitzero"`
	Headers map[string]string `json:"headers,omitempty"`
	Payload json.RawMessage   `json:"payload,omitempty"`
	Raw     []byte            `json:"raw,omitempty"`
}

func tailCommand() *cli.Command {
	return &cli.Command{
		Name:  "tail",
		Usage: "print the messages sent to a channel from now on, without consuming them",
		UsageText: `channels tail [--count N] CHANNEL

Example:
   channels tail order.created
   channels --json tail --count 10 order.created`,
		Description: "Follows CHANNEL (without the namespace) without joining any group, until interrupted or --count messages. With --json, one JSON object per line (payload as JSON when it is JSON, else base64 in raw).",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "count", Usage: "stop after this many messages (0: until interrupted)"},
		},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			if err := noFlagsAfterArgs(c); err != nil {
				return err
			}
			if c.NArg() != 1 {
				return usagef("tail takes one CHANNEL")
			}
			g := globalsOf(c)
			ch, err := g.name("CHANNEL", c.Args().First())
			if err != nil {
				return err
			}
			count := c.Int("count")
			return withAdapter(c, true, func(ctx context.Context, a broker.Adapter) error {
				n := 0
				enc := json.NewEncoder(c.App.Writer)
				var werr error
				err := dlq.Tail(ctx, a, ch, func(m *broker.StoredMessage) bool {
					n++
					if g.json {
						l := tailLine{ID: m.ID, Channel: m.Channel, Time: m.Time, Headers: m.Headers}
						if json.Valid(m.Payload) {
							l.Payload = m.Payload
						} else {
							l.Raw = m.Payload
						}
						werr = enc.Encode(l)
					} else {
						format, text := dlq.FormatPayload(m.Payload, 4096)
						if format == dlq.FormatJSON {
							text = string(compactJSON(m.Payload))
						}
						_, werr = fmt.Fprintf(c.App.Writer, "%s %s %s %s\n", timeText(m.Time), clean(m.ID, 0), headersText(m.Headers), clean(text, 4096))
					}
					return werr == nil && (count == 0 || n < count)
				})
				if err == nil {
					err = werr
				}
				return err
			})
		},
	}
}

func compactJSON(p []byte) []byte {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	var v json.RawMessage = p
	if enc.Encode(v) != nil {
		return p
	}
	return []byte(strings.TrimSpace(b.String()))
}

// headersText is "{k=v, ...}" sorted, values cut.
func headersText(h map[string]string) string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, clean(k, 0)+"="+clean(h[k], 80))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}
