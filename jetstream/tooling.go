package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	js "github.com/nats-io/nats.go/jetstream"

	"github.com/microchannels/channels/broker"
)

var (
	_ broker.DeadLetterStore = (*Adapter)(nil)
	_ broker.MessageRemover  = (*Adapter)(nil)
	_ broker.Tailer          = (*Adapter)(nil)
	_ broker.ChannelLister   = (*Adapter)(nil)
)

// TailPoll is how often Tail looks for the stream of a channel that has
// none yet.
const TailPoll = 500 * time.Millisecond

// apiMsgGet is the JetStream API subject of a stored message's read (the
// adapter's JetStream context uses the default API prefix).
const apiMsgGet = "$JS.API.STREAM.MSG.GET."

// storedMsg is a message as the JetStream API returns it, its header
// block still encoded.
type storedMsg struct {
	Subject  string    `json:"subject"`
	Sequence uint64    `json:"seq"`
	Header   []byte    `json:"hdrs,omitempty"`
	Data     []byte    `json:"data,omitempty"`
	Time     time.Time `json:"time"`
}

// getMsg reads the message seq of stream, or with subject the first
// message at or after seq stored on that subject (next_by_subj). It leaves
// the header block encoded, so a message whose headers do not decode is
// still read (nats.go's GetMsg fails on it). It is a plain request of the
// API: no consumer, nothing acknowledged. js.ErrMsgNotFound when there is
// no such message.
func getMsg(ctx context.Context, nc *nats.Conn, stream string, seq uint64, subject string) (*storedMsg, error) {
	req, err := json.Marshal(struct {
		Seq     uint64 `json:"seq"`
		NextFor string `json:"next_by_subj,omitempty"`
	}{seq, subject})
	if err != nil {
		return nil, err
	}
	rctx, cancel := opCtx(ctx)
	defer cancel()
	reply, err := nc.RequestWithContext(rctx, apiMsgGet+stream, req)
	if err != nil {
		return nil, err
	}
	var resp struct {
		Error   *js.APIError `json:"error,omitempty"`
		Message *storedMsg   `json:"message,omitempty"`
	}
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return nil, fmt.Errorf("channels/jetstream: message read on %q: %w", stream, err)
	}
	if resp.Error != nil {
		if resp.Error.ErrorCode == js.JSErrCodeMessageNotFound {
			return nil, js.ErrMsgNotFound
		}
		return nil, resp.Error
	}
	if resp.Message == nil {
		return nil, js.ErrInvalidJetStreamResponse
	}
	return resp.Message, nil
}

// opCtx bounds one request by DefaultOpTimeout when ctx has no deadline.
func opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, DefaultOpTimeout)
}

// messageHeaders are a message's headers as a consumer sees them: the
// first value of each, without the NATS transport headers (Nats-*).
func messageHeaders(h nats.Header) map[string]string {
	if len(h) == 0 {
		return nil
	}
	out := make(map[string]string, len(h))
	for k, vs := range h {
		if len(vs) == 0 || strings.HasPrefix(k, headerPrefixNATS) {
			continue
		}
		out[k] = vs[0]
	}
	return out
}

// stored builds the StoredMessage of m; headers that do not decode are
// left out (nil Headers).
func (m *storedMsg) stored() *broker.StoredMessage {
	sm := &broker.StoredMessage{ID: strconv.FormatUint(m.Sequence, 10), Channel: m.Subject, Payload: m.Data, Time: m.Time}
	if len(m.Header) > 0 {
		if h, err := nats.DecodeHeadersMsg(m.Header); err == nil {
			sm.Headers = messageHeaders(h)
		} else {
			sm.DecodeError = err.Error()
		}
	}
	return sm
}

// storing finds the stream that stores subject; ok false when none does.
func (a *Adapter) storing(ctx context.Context, c *conn, subject string) (js.Stream, bool, error) {
	name, err := c.js.StreamNameBySubject(ctx, subject)
	if errors.Is(err, js.ErrStreamNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	st, err := c.js.Stream(ctx, name)
	if errors.Is(err, js.ErrStreamNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return st, true, nil
}

// BrowseDeadLetters reads the messages of the dead-letter subject queue in
// the stream that stores it (found by subject, so a shared stream works),
// one direct message read per message (no consumer: nothing is delivered,
// acknowledged or removed, whatever the stream's retention), from the
// first to the last stored on that subject when the call started. A
// message's ID is its stream sequence, its Time the time the stream stored
// it; headers that do not decode give nil Headers.
func (a *Adapter) BrowseDeadLetters(ctx context.Context, queue string, fn func(*broker.StoredMessage) bool) error {
	c, err := a.life.Current()
	if err != nil {
		return err
	}
	st, ok, err := a.storing(ctx, c, queue)
	if err != nil {
		return fmt.Errorf("channels/jetstream: browse %q: %w", queue, err)
	}
	if !ok {
		return nil
	}
	// The stream's state when the call started bounds the browse (a read
	// of the last message by subject is not used: nats-server 2.9 can
	// miss it once the stream's last message was deleted).
	info := st.CachedInfo()
	name, first, last := info.Config.Name, info.State.FirstSeq, info.State.LastSeq
	if info.State.Msgs == 0 {
		return nil
	}
	for seq := max(first, 1); seq <= last; {
		m, err := getMsg(ctx, c.nc, name, seq, queue)
		if errors.Is(err, js.ErrMsgNotFound) {
			return nil // none left on queue
		}
		if err != nil {
			return fmt.Errorf("channels/jetstream: browse %q: %w", queue, err)
		}
		if m.Sequence > last {
			return nil
		}
		if !fn(m.stored()) {
			return nil
		}
		seq = m.Sequence + 1
	}
	return nil
}

// RemoveDeadLetters deletes the messages with these stream sequences from
// the stream of queue (stream message delete) and returns how many it
// deleted. A sequence that is not a message of queue (another subject of a
// shared stream, removed, or not a number) is not found.
func (a *Adapter) RemoveDeadLetters(ctx context.Context, queue string, ids ...string) (int, error) {
	c, err := a.life.Current()
	if err != nil {
		return 0, err
	}
	st, ok, err := a.storing(ctx, c, queue)
	if err != nil {
		return 0, fmt.Errorf("channels/jetstream: remove dead letters from %q: %w", queue, err)
	}
	if !ok {
		return 0, nil
	}
	removed := 0
	for _, id := range ids {
		err := a.deleteMsg(ctx, c, st, queue, id)
		if errors.Is(err, broker.ErrNotFound) {
			continue
		}
		if err != nil {
			return removed, fmt.Errorf("channels/jetstream: remove dead letters from %q: %w", queue, err)
		}
		removed++
	}
	return removed, nil
}

// RemoveMessage deletes the message with stream sequence id from the
// stream of channel: it is gone for every group that has not received it
// yet. ErrNotFound when the stream holds no such message on that subject.
func (a *Adapter) RemoveMessage(ctx context.Context, channel, id string) error {
	c, err := a.life.Current()
	if err != nil {
		return err
	}
	st, ok, err := a.storing(ctx, c, channel)
	if err != nil {
		return fmt.Errorf("channels/jetstream: remove %s from %q: %w", id, channel, err)
	}
	if !ok {
		return fmt.Errorf("%w: channels/jetstream: no stream stores %q", broker.ErrNotFound, channel)
	}
	if err := a.deleteMsg(ctx, c, st, channel, id); err != nil {
		if errors.Is(err, broker.ErrNotFound) {
			return err
		}
		return fmt.Errorf("channels/jetstream: remove %s from %q: %w", id, channel, err)
	}
	return nil
}

// deleteMsg deletes the message id of st after checking that it is stored
// on subject (a shared stream holds other subjects under the same
// sequence numbers); broker.ErrNotFound when it is not.
func (a *Adapter) deleteMsg(ctx context.Context, c *conn, st js.Stream, subject, id string) error {
	seq, err := strconv.ParseUint(id, 10, 64)
	if err != nil || seq == 0 {
		return fmt.Errorf("%w: channels/jetstream: %q is not a stream sequence", broker.ErrNotFound, id)
	}
	notFound := fmt.Errorf("%w: channels/jetstream: no message %d on %q", broker.ErrNotFound, seq, subject)
	m, err := getMsg(ctx, c.nc, st.CachedInfo().Config.Name, seq, "")
	if errors.Is(err, js.ErrMsgNotFound) {
		return notFound
	}
	if err != nil {
		return err
	}
	if m.Subject != subject {
		return notFound
	}
	if err := st.DeleteMsg(ctx, seq); err != nil {
		// Deleted meanwhile: the server's "no message found" or
		// "sequence ... not found".
		if errors.Is(err, js.ErrMsgDeleteUnsuccessful) && strings.Contains(strings.ToLower(err.Error()), "not found") {
			return notFound
		}
		return err
	}
	return nil
}

// Tail follows the subject channel with an ordered consumer (ephemeral,
// no acks, deleted when Tail returns) that delivers the messages stored
// after it was created; a channel without a stream yet is looked for every
// TailPoll, and once its stream exists Tail reads it from its start. On a
// stream with interest retention the consumer counts as an interest while
// it exists; a work-queue stream refuses it (the error is returned).
func (a *Adapter) Tail(ctx context.Context, channel string, fn func(*broker.StoredMessage) bool) error {
	c, err := a.life.Current()
	if err != nil {
		return err
	}
	policy := js.DeliverNewPolicy
	var st js.Stream
	for {
		var ok bool
		st, ok, err = a.storing(ctx, c, channel)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("channels/jetstream: tail %q: %w", channel, err)
		}
		if ok {
			break
		}
		policy = js.DeliverAllPolicy // every message of a stream created from now on is new
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(TailPoll):
		}
	}
	cons, err := st.OrderedConsumer(ctx, js.OrderedConsumerConfig{FilterSubjects: []string{channel}, DeliverPolicy: policy})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("channels/jetstream: tail %q: %w", channel, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("channels/jetstream: tail %q: %w", channel, err)
	}
	defer it.Stop()
	for {
		m, err := it.Next(js.NextContext(ctx))
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("channels/jetstream: tail %q: %w", channel, err)
		}
		sm := &broker.StoredMessage{Channel: m.Subject(), Payload: m.Data(), Headers: messageHeaders(m.Headers())}
		if meta, err := m.Metadata(); err == nil {
			sm.ID, sm.Time = strconv.FormatUint(meta.Sequence.Stream, 10), meta.Timestamp
		}
		if !fn(sm) {
			return nil
		}
	}
}

// Channels lists the subjects of the account's streams that start with
// prefix, each a channel: a stream's literal subjects, and the subjects
// stored under its wildcard subjects. Subjects starting with "$" (key-value
// buckets, object stores, system streams) are left out. Messages counts
// the channel's messages in its stream. Groups are the durable consumers
// whose filter covers the channel (named as the durables are: the group
// with dots turned into underscores), with NumPending as the lag and
// NumAckPending as pending (a consumer filtered on several channels counts
// them all). It costs a listing of the streams, and for each stream that
// holds a listed channel a listing of its consumers (and a subject count
// for a stream of several subjects).
func (a *Adapter) Channels(ctx context.Context, prefix string) ([]broker.ChannelInfo, error) {
	c, err := a.life.Current()
	if err != nil {
		return nil, err
	}
	lister := c.js.ListStreams(ctx)
	var infos []*js.StreamInfo
	for info := range lister.Info() {
		infos = append(infos, info)
	}
	if err := lister.Err(); err != nil {
		return nil, fmt.Errorf("channels/jetstream: list streams: %w", err)
	}
	out := []broker.ChannelInfo{}
	for _, info := range infos {
		chans, err := a.streamChannels(ctx, c, info, prefix)
		if err != nil {
			return nil, err
		}
		out = append(out, chans...)
	}
	slices.SortFunc(out, func(x, y broker.ChannelInfo) int { return strings.Compare(x.Name, y.Name) })
	return out, nil
}

// streamChannels returns the channels of one stream under prefix.
func (a *Adapter) streamChannels(ctx context.Context, c *conn, info *js.StreamInfo, prefix string) ([]broker.ChannelInfo, error) {
	subjects := info.Config.Subjects
	wanted := func(s string) bool { return !strings.HasPrefix(s, "$") && strings.HasPrefix(s, prefix) }
	literal := func(s string) bool { return !strings.ContainsAny(s, "*>") }
	var counts map[string]int64
	if len(subjects) == 1 && literal(subjects[0]) {
		if !wanted(subjects[0]) {
			return nil, nil
		}
		counts = map[string]int64{subjects[0]: int64(info.State.Msgs)}
	} else {
		relevant := false
		for _, s := range subjects {
			if !strings.HasPrefix(s, "$") && (!literal(s) || wanted(s)) {
				relevant = true
			}
		}
		if !relevant {
			return nil, nil
		}
		st, err := c.js.Stream(ctx, info.Config.Name)
		if errors.Is(err, js.ErrStreamNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("channels/jetstream: stream %q: %w", info.Config.Name, err)
		}
		counts = map[string]int64{}
		for _, s := range subjects {
			if strings.HasPrefix(s, "$") || (literal(s) && !wanted(s)) {
				continue
			}
			si, err := st.Info(ctx, js.WithSubjectFilter(s))
			if errors.Is(err, js.ErrStreamNotFound) {
				return nil, nil
			}
			if err != nil {
				return nil, fmt.Errorf("channels/jetstream: stream %q: %w", info.Config.Name, err)
			}
			if literal(s) {
				counts[s] = 0 // listed without messages too
			}
			for subj, n := range si.State.Subjects {
				if wanted(subj) {
					counts[subj] = int64(n)
				}
			}
		}
		if len(counts) == 0 {
			return nil, nil
		}
	}
	st, err := c.js.Stream(ctx, info.Config.Name)
	if errors.Is(err, js.ErrStreamNotFound) {
		return nil, nil // deleted meanwhile
	}
	if err != nil {
		return nil, fmt.Errorf("channels/jetstream: stream %q: %w", info.Config.Name, err)
	}
	cl := st.ListConsumers(ctx)
	var consumers []*js.ConsumerInfo
	for ci := range cl.Info() {
		if ci.Config.Durable != "" {
			consumers = append(consumers, ci)
		}
	}
	if err := cl.Err(); err != nil && !errors.Is(err, js.ErrStreamNotFound) {
		return nil, fmt.Errorf("channels/jetstream: consumers of %q: %w", info.Config.Name, err)
	}
	out := make([]broker.ChannelInfo, 0, len(counts))
	for subj, n := range counts {
		ci := broker.ChannelInfo{Name: subj, Messages: n, Groups: []broker.GroupInfo{}}
		for _, cons := range consumers {
			filters := cons.Config.FilterSubjects
			if cons.Config.FilterSubject != "" {
				filters = append(slices.Clone(filters), cons.Config.FilterSubject)
			}
			if len(filters) > 0 && !covers(filters, subj) {
				continue
			}
			ci.Groups = append(ci.Groups, broker.GroupInfo{Name: groupOf(cons.Config),
				GroupLag: broker.GroupLag{Lag: int64(cons.NumPending), Pending: int64(cons.NumAckPending)}})
		}
		slices.SortFunc(ci.Groups, func(x, y broker.GroupInfo) int { return strings.Compare(x.Name, y.Name) })
		out = append(out, ci)
	}
	return out, nil
}
