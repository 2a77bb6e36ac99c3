package dlq

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
)

// DefaultQueue is the dead-letter queue of a plugin's default configuration,
// before the namespace prefix.
const DefaultQueue = broker.DefaultDeadLetterQueue

// HeaderReplayedFrom is the trail Replay adds to each message it sends back:
// a JSON array of Trail records, oldest first.
const HeaderReplayedFrom = "x-replayed-from"

// QueueName is the broker-side name of a dead-letter queue (or channel)
// declared as name under namespace: "ns.FAILED_MESSAGES" for namespace "ns"
// and name "" or DefaultQueue. It is channels.QualifiedName with the
// default queue filled in.
func QueueName(namespace, name string) (string, error) {
	if name == "" {
		name = DefaultQueue
	}
	return channels.QualifiedName(namespace, name)
}

// Filter selects dead letters. The zero Filter selects all of them; set
// fields must all match.
type Filter struct {
	// Channel is the full (namespaced) name of the channel the message was
	// dead-lettered from (x-original-channel).
	Channel string
	// Since keeps dead letters whose Entry.Time is at or after it; a dead
	// letter whose time is unknown does not match a Since.
	Since time.Time
	// ErrorContains keeps dead letters whose error message or error name
	// contains it, case-insensitively.
	ErrorContains string
	// IDs keeps the dead letters with these broker IDs.
	IDs []string
	// Limit stops after that many matches (0: no limit).
	Limit int
}

func (f Filter) match(e *Entry) bool {
	if f.Channel != "" && e.OriginalChannel != f.Channel {
		return false
	}
	if !f.Since.IsZero() && (e.Time.IsZero() || e.Time.Before(f.Since)) {
		return false
	}
	if f.ErrorContains != "" {
		s := strings.ToLower(f.ErrorContains)
		if !strings.Contains(strings.ToLower(e.ErrorMessage), s) && !strings.Contains(strings.ToLower(e.ErrorName), s) {
			return false
		}
	}
	if len(f.IDs) > 0 && !slices.Contains(f.IDs, e.ID) {
		return false
	}
	return true
}

// Entry is one dead letter as the tooling shows it.
type Entry struct {
	// ID is the broker's ID of the dead letter in its queue (see
	// broker.StoredMessage.ID).
	ID string `json:"id"`
	// OriginalChannel and OriginalGroup are where the message failed
	// (x-original-channel, x-original-group); full names.
	OriginalChannel string `json:"originalChannel"`
	OriginalGroup   string `json:"originalGroup,omitempty"`
	// ErrorMessage and ErrorName are the failure (x-error-message,
	// x-error-name), as written: one line, control characters escaped.
	// Empty for dead letters of @moleculer/channels 0.1, which carry no
	// error.
	ErrorMessage string `json:"errorMessage,omitempty"`
	ErrorName    string `json:"errorName,omitempty"`
	// Attempts is how many times the handler ran (x-redelivered-count + 1);
	// 0 when the dead letter does not tell.
	Attempts int `json:"attempts,omitempty"`
	// Time is when the message was dead-lettered (x-error-timestamp), else
	// when the broker stored it; zero when neither is known.
	Time time.Time `json:"time,omitzero"`
	// Key is the broker's key of the dead letter (broker.StoredMessage.Key:
	// Kafka's record key); nil when it has none.
	Key []byte `json:"key,omitempty"`
	// Payload is the message's bytes. In JSON (MarshalJSON) it is
	// "payload", as JSON, when it is JSON, else "raw", in base64.
	Payload []byte            `json:"-"`
	Headers map[string]string `json:"headers,omitempty"`
	// DecodeError says why the dead letter could not be read whole: its
	// headers (or payload field) did not decode (broker.StoredMessage
	// DecodeError, for example a serializer that is not the plugin's), or
	// the adapter listed only part of its headers (Kafka's
	// x-channels-headers-cut). Empty when it was read whole. Replay and
	// Move refuse such a dead letter unless ReplayOptions.Force.
	DecodeError string `json:"decodeError,omitempty"`
}

// headerHeadersCut is the header an adapter sets on a stored message it
// lists with only part of its headers (kafka.HeaderHeadersCut).
const headerHeadersCut = "x-channels-headers-cut"

// EntryOf reads a stored dead letter.
func EntryOf(m *broker.StoredMessage) Entry {
	h := m.Headers
	e := Entry{ID: m.ID, OriginalChannel: h[broker.HeaderOriginalChannel], OriginalGroup: h[broker.HeaderOriginalGroup],
		ErrorMessage: h[broker.HeaderErrorMessage], ErrorName: h[broker.HeaderErrorName],
		Time: m.Time, Key: m.Key, Payload: m.Payload, Headers: h, DecodeError: m.DecodeError}
	if cut, ok := h[headerHeadersCut]; ok && e.DecodeError == "" {
		e.DecodeError = "headers cut by the adapter: " + cut
	}
	if n, err := strconv.Atoi(h[broker.HeaderRedeliveredCount]); err == nil && n >= 0 && n < 1<<30 {
		e.Attempts = n + 1
	}
	if re := broker.ErrorFromHeaders(h); re != nil && !re.Timestamp.IsZero() {
		e.Time = re.Timestamp
	}
	return e
}

func need[T any](a broker.Adapter, ability string) (T, error) {
	t, ok := a.(T)
	if !ok {
		return t, fmt.Errorf("%w: the %s adapter has no %s", broker.ErrUnsupported, a.Name(), ability)
	}
	return t, nil
}

// List returns the dead letters of queue (a full name) that match f, oldest
// first. It reads them with the adapter's DeadLetterStore (else
// broker.ErrUnsupported) and takes nothing from the queue.
func List(ctx context.Context, a broker.Adapter, queue string, f Filter) ([]Entry, error) {
	st, err := need[broker.DeadLetterStore](a, "dead-letter store (browse and remove dead letters)")
	if err != nil {
		return nil, err
	}
	var out []Entry
	left := len(f.IDs)
	err = st.BrowseDeadLetters(ctx, queue, func(m *broker.StoredMessage) bool {
		e := EntryOf(m)
		if !f.match(&e) {
			return true
		}
		out = append(out, e)
		if len(f.IDs) > 0 {
			left--
		}
		return (f.Limit <= 0 || len(out) < f.Limit) && (len(f.IDs) == 0 || left > 0)
	})
	if err != nil {
		return out, fmt.Errorf("browse dead letters of %q: %w", queue, err)
	}
	return out, nil
}

// Untimed counts the dead letters of queue that f would match but for its
// Since: those whose time is unknown (Entry.Time zero), which no Since
// matches. It is 0 when f has no Since.
func Untimed(ctx context.Context, a broker.Adapter, queue string, f Filter) (int, error) {
	if f.Since.IsZero() {
		return 0, nil
	}
	st, err := need[broker.DeadLetterStore](a, "dead-letter store (browse and remove dead letters)")
	if err != nil {
		return 0, err
	}
	f.Since, f.Limit = time.Time{}, 0
	n := 0
	err = st.BrowseDeadLetters(ctx, queue, func(m *broker.StoredMessage) bool {
		e := EntryOf(m)
		if e.Time.IsZero() && f.match(&e) {
			n++
		}
		return true
	})
	return n, err
}

// Get returns the dead letter id of queue; broker.ErrNotFound when the
// queue holds none.
func Get(ctx context.Context, a broker.Adapter, queue, id string) (Entry, error) {
	es, err := List(ctx, a, queue, Filter{IDs: []string{id}, Limit: 1})
	if err != nil {
		return Entry{}, err
	}
	if len(es) == 0 {
		return Entry{}, fmt.Errorf("%w: dead letter %q in %q", broker.ErrNotFound, id, queue)
	}
	return es[0], nil
}

// Purge removes the dead letters of queue that match f and returns how
// many the broker removed. IDs of f that matched no dead letter give an
// error wrapping broker.ErrNotFound, after the others are removed.
func Purge(ctx context.Context, a broker.Adapter, queue string, f Filter) (int, error) {
	st, err := need[broker.DeadLetterStore](a, "dead-letter store (browse and remove dead letters)")
	if err != nil {
		return 0, err
	}
	// Only the IDs are held, then removed DefaultBatchSize at a time.
	var es []Entry
	seen := map[string]bool{}
	err = st.BrowseDeadLetters(ctx, queue, func(m *broker.StoredMessage) bool {
		e := EntryOf(m)
		if seen[e.ID] || !f.match(&e) {
			return true
		}
		seen[e.ID] = true
		es = append(es, Entry{ID: e.ID})
		return f.Limit <= 0 || len(es) < f.Limit
	})
	if err != nil {
		return 0, fmt.Errorf("browse dead letters of %q: %w", queue, err)
	}
	removed := 0
	const batch = DefaultBatchSize
	for i := 0; i < len(es); i += batch {
		ids := make([]string, 0, batch)
		for _, e := range es[i:min(i+batch, len(es))] {
			ids = append(ids, e.ID)
		}
		n, err := st.RemoveDeadLetters(ctx, queue, ids...)
		removed += n
		if err != nil {
			return removed, fmt.Errorf("remove dead letters of %q: %w", queue, err)
		}
	}
	return removed, notFound(queue, f, es)
}

// Channels lists the channels whose full name starts with "namespace."
// (every channel for an empty namespace), with their groups' backlogs.
func Channels(ctx context.Context, a broker.Adapter, namespace string) ([]broker.ChannelInfo, error) {
	cl, err := need[broker.ChannelLister](a, "channel listing")
	if err != nil {
		return nil, err
	}
	prefix := ""
	if namespace != "" {
		prefix = namespace + "."
	}
	return cl.Channels(ctx, prefix)
}

// Tail calls fn with each message sent to channel (a full name) after Tail
// started, without joining any group, until ctx ends (then it returns nil)
// or fn returns false.
func Tail(ctx context.Context, a broker.Adapter, channel string, fn func(*broker.StoredMessage) bool) error {
	t, err := need[broker.Tailer](a, "tail")
	if err != nil {
		return err
	}
	return t.Tail(ctx, channel, fn)
}

// RemoveMessage deletes the stored message id of channel (a full name);
// broker.ErrNotFound when the channel holds no such message.
func RemoveMessage(ctx context.Context, a broker.Adapter, channel, id string) error {
	r, err := need[broker.MessageRemover](a, "message removal")
	if err != nil {
		return err
	}
	return r.RemoveMessage(ctx, channel, id)
}
