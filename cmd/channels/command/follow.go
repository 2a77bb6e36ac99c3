package command

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/dlq"
)

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
