package amqp

import (
	"context"
	"errors"
	"regexp"
	"strconv"
	"strings"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// inequivalent reads RabbitMQ's PRECONDITION_FAILED about a queue
// declaration: "inequivalent arg 'K' for queue 'Q' in vhost 'V': received
// R but current is C", where R and C are "none", "'v'" (same type as the
// other side) or "the value 'v' of type 'T'". RabbitMQ names the first
// argument that differs, in its own order of arguments (x-dead-letter-*
// before x-queue-type).
var inequivalent = regexp.MustCompile(`inequivalent arg '([^']+)' for .*: received .* but current is (none|'(.*)'|the value '(.*)' of type '([a-z]+)')$`)

// maxProbes bounds the declarations of probeQueue (RabbitMQ checks about
// twenty arguments).
const maxProbes = 24

// probeQueue finds the type of the existing queue name, which refused the
// declaration args with PRECONDITION_FAILED. A passive declaration does not
// tell a queue's arguments, and RabbitMQ's refusal names only the first
// argument that differs (a classic queue with a dead-letter exchange is
// refused for x-dead-letter-exchange, not x-queue-type), so it declares the
// queue again, one differing argument at a time set to what the queue has,
// until the refusal names x-queue-type or the declaration succeeds: that
// declaration is equivalent to the queue (it changes nothing; if the queue
// was deleted meanwhile, it declares one with the arguments it had). It
// returns the type (QueueQuorum, QueueClassic or another) and the
// arguments found to differ from args, with the queue's values (nil: the
// queue has none). An empty type: it could not tell. A refusal that names
// the durable, auto_delete or exclusive property of the queue changes that
// property of the next declaration; a queue found to be not durable,
// auto-deleted or exclusive is classic (the only type that can be).
func probeQueue(ctx context.Context, c *amqp091.Connection, name string, q QueueOptions, args amqp091.Table) (string, map[string]any, error) {
	probe := make(amqp091.Table, len(args))
	for k, v := range args {
		probe[k] = v
	}
	found := map[string]any{}
	flags := map[string]bool{"durable": durable(q.Durable), "auto_delete": q.AutoDelete, "exclusive": q.Exclusive}
	for range maxProbes {
		ch, err := openChannel(ctx, c, false)
		if err != nil {
			return "", found, err
		}
		err = bounded(ctx, "declaring a queue", func() error {
			_, err := ch.QueueDeclare(name, flags["durable"], flags["auto_delete"], flags["exclusive"], false, probe)
			return err
		})
		go func() { _ = ch.Close() }()
		if err == nil {
			t, _ := valueString(probe["x-queue-type"])
			return typeOf(t), found, nil
		}
		if !isCode(err, amqp091.PreconditionFailed) {
			return "", found, err
		}
		var e *amqp091.Error
		if !errors.As(err, &e) {
			return "", found, nil
		}
		key, cur, ok := parseInequivalent(e.Reason, probe)
		if !ok {
			return "", found, nil
		}
		if was, flag := flags[key]; flag {
			// A property of the queue, not an argument.
			b, isBool := cur.(bool)
			if s, isText := cur.(string); isText {
				b, err = strconv.ParseBool(s)
				isBool = err == nil
			}
			if !isBool || b == was {
				return "", found, nil
			}
			flags[key] = b
			if !flags["durable"] || flags["auto_delete"] || flags["exclusive"] {
				// Quorum and stream queues are durable, never
				// auto-deleted nor exclusive.
				return QueueClassic, found, nil
			}
			continue
		}
		found[key] = cur
		if key == "x-queue-type" {
			t, _ := valueString(cur)
			return typeOf(t), found, nil
		}
		if cur == nil {
			delete(probe, key)
		} else {
			probe[key] = cur
		}
	}
	return "", found, nil
}

// typeOf names a queue type from its x-queue-type ("" and classic:
// QueueClassic).
func typeOf(t string) string {
	if t == "" {
		return QueueClassic
	}
	return t
}

// parseInequivalent reads the argument a refusal names and the queue's
// value of it (nil: none), typed as the declaration sent it when RabbitMQ
// gives no type.
func parseInequivalent(reason string, sent amqp091.Table) (string, any, bool) {
	m := inequivalent.FindStringSubmatch(reason)
	if m == nil {
		return "", nil, false
	}
	key := m[1]
	switch {
	case m[2] == "none":
		return key, nil, true
	case m[3] != "" || strings.HasPrefix(m[2], "'"):
		v, ok := likeSent(m[3], sent[key])
		return key, v, ok
	default:
		v, ok := ofType(m[4], m[5])
		return key, v, ok
	}
}

// likeSent parses v as the type of what was sent (as text when nothing
// was).
func likeSent(v string, sent any) (any, bool) {
	switch sent.(type) {
	case string, nil:
		return v, true
	case bool:
		b, err := strconv.ParseBool(v)
		return b, err == nil
	case int8, int16, int32, int64, int, uint8, uint16, uint32, uint64:
		n, err := strconv.ParseInt(v, 10, 64)
		return n, err == nil
	}
	return nil, false
}

// ofType parses v as RabbitMQ's field type t.
func ofType(v, t string) (any, bool) {
	switch t {
	case "longstr":
		return v, true
	case "bool":
		b, err := strconv.ParseBool(v)
		return b, err == nil
	case "long", "signedint", "short", "byte", "unsignedint", "unsignedshort", "unsignedbyte":
		n, err := strconv.ParseInt(v, 10, 64)
		return n, err == nil
	}
	return nil, false
}

// serverAtLeast reports whether the RabbitMQ of c is version major.minor
// or later (its server property "version"); an unknown version counts as
// recent.
func serverAtLeast(c *amqp091.Connection, major, minor int) bool {
	return versionAtLeast(serverVersion(c), major, minor)
}

// serverVersion is the server property "version" of c ("" when unknown).
func serverVersion(c *amqp091.Connection) string {
	if c == nil {
		return ""
	}
	v, _ := valueString(c.Properties["version"])
	return v
}

func versionAtLeast(v string, major, minor int) bool {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return true
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(strings.TrimFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	if err1 != nil || err2 != nil {
		return true
	}
	return ma > major || (ma == major && mi >= minor)
}

// forServer adapts a planned group queue to the RabbitMQ of version: one
// older than 3.10 has no at-least-once dead-lettering, so a quorum queue is
// declared without the x-dead-letter-strategy and x-overflow the adapter
// adds (dead-lettering by RabbitMQ is then at-most-once). Its retry queues
// are classic there (see topology.retryQueue).
func forServer(g groupQueue, version string) groupQueue {
	if !g.atLeastOnce || versionAtLeast(version, 3, 10) {
		return g
	}
	args := make(amqp091.Table, len(g.args))
	for k, v := range g.args {
		if k != "x-dead-letter-strategy" && k != "x-overflow" {
			args[k] = v
		}
	}
	g.args, g.atLeastOnce = args, false
	return g
}
