package iperf3proto

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// StreamResults is one stream's entry in the results JSON.
type StreamResults struct {
	ID             int     `json:"id"`
	Bytes          uint64  `json:"bytes"`
	Retransmits    int64   `json:"retransmits"`
	Jitter         float64 `json:"jitter"`
	Errors         int64   `json:"errors"`
	OmittedErrors  int64   `json:"omitted_errors"`
	Packets        int64   `json:"packets"`
	OmittedPackets int64   `json:"omitted_packets"`
	StartTime      float64 `json:"start_time"`
	EndTime        float64 `json:"end_time"`
}

// Results is the JSON object each side sends in EXCHANGE_RESULTS.
type Results struct {
	CPUUtilTotal         float64         `json:"cpu_util_total"`
	CPUUtilUser          float64         `json:"cpu_util_user"`
	CPUUtilSystem        float64         `json:"cpu_util_system"`
	SenderHasRetransmits int             `json:"sender_has_retransmits"`
	CongestionUsed       string          `json:"congestion_used,omitempty"`
	ServerOutputJSON     json.RawMessage `json:"server_output_json,omitempty"`
	ServerOutputText     string          `json:"server_output_text,omitempty"`
	Streams              []StreamResults `json:"streams"`
}

// resultsWire mirrors Results with pointers so that required keys can be
// told apart from zero values.
type resultsWire struct {
	CPUUtilTotal         *float64        `json:"cpu_util_total"`
	CPUUtilUser          *float64        `json:"cpu_util_user"`
	CPUUtilSystem        *float64        `json:"cpu_util_system"`
	SenderHasRetransmits *float64        `json:"sender_has_retransmits"`
	CongestionUsed       *string         `json:"congestion_used"`
	ServerOutputJSON     json.RawMessage `json:"server_output_json"`
	ServerOutputText     *string         `json:"server_output_text"`
	Streams              *[]streamWire   `json:"streams"`
}

type streamWire struct {
	ID             *float64 `json:"id"`
	Bytes          *float64 `json:"bytes"`
	Retransmits    *float64 `json:"retransmits"`
	Jitter         *float64 `json:"jitter"`
	Errors         *float64 `json:"errors"`
	OmittedErrors  *float64 `json:"omitted_errors"`
	Packets        *float64 `json:"packets"`
	OmittedPackets *float64 `json:"omitted_packets"`
	StartTime      *float64 `json:"start_time"`
	EndTime        *float64 `json:"end_time"`
}

// ParseResults decodes a results JSON object of at most max bytes (max <= 0
// means MaxResultsSize). The keys the reference implementation requires must
// be present with numeric values.
func ParseResults(b []byte, max int) (Results, error) {
	if max <= 0 {
		max = MaxResultsSize
	}
	var r Results
	if len(b) > max {
		return r, fmt.Errorf("iperf3 results: %d bytes, limit %d: %w", len(b), max, ErrTooLarge)
	}
	var w resultsWire
	if err := json.Unmarshal(b, &w); err != nil {
		return r, fmt.Errorf("iperf3 results: %w: %v", ErrMalformed, err)
	}
	if w.CPUUtilTotal == nil || w.CPUUtilUser == nil || w.CPUUtilSystem == nil || w.SenderHasRetransmits == nil || w.Streams == nil {
		return r, fmt.Errorf("iperf3 results: missing cpu_util, sender_has_retransmits or streams: %w", ErrParamType)
	}
	r.CPUUtilTotal, r.CPUUtilUser, r.CPUUtilSystem = *w.CPUUtilTotal, *w.CPUUtilUser, *w.CPUUtilSystem
	r.SenderHasRetransmits = int(*w.SenderHasRetransmits)
	if w.CongestionUsed != nil {
		r.CongestionUsed = *w.CongestionUsed
	}
	if len(bytes.TrimSpace(w.ServerOutputJSON)) > 0 && string(bytes.TrimSpace(w.ServerOutputJSON)) != "null" {
		r.ServerOutputJSON = append(json.RawMessage(nil), w.ServerOutputJSON...)
	}
	if w.ServerOutputText != nil {
		r.ServerOutputText = *w.ServerOutputText
	}
	if len(*w.Streams) > 2*MaxStreams {
		return Results{}, fmt.Errorf("iperf3 results: %d streams: %w", len(*w.Streams), ErrTooLarge)
	}
	r.Streams = make([]StreamResults, 0, len(*w.Streams))
	for i, s := range *w.Streams {
		if s.ID == nil || s.Bytes == nil || s.Retransmits == nil || s.Jitter == nil || s.Errors == nil || s.Packets == nil {
			return Results{}, fmt.Errorf("iperf3 results: stream %d misses a required key: %w", i, ErrParamType)
		}
		if (s.OmittedErrors == nil) != (s.OmittedPackets == nil) {
			return Results{}, fmt.Errorf("iperf3 results: stream %d has only one omitted counter: %w", i, ErrParamType)
		}
		if *s.Bytes < 0 {
			return Results{}, fmt.Errorf("iperf3 results: stream %d negative bytes: %w", i, ErrParamType)
		}
		sr := StreamResults{
			ID: int(*s.ID), Bytes: uint64(*s.Bytes), Retransmits: int64(*s.Retransmits),
			Jitter: *s.Jitter, Errors: int64(*s.Errors), Packets: int64(*s.Packets),
		}
		if s.OmittedErrors != nil {
			sr.OmittedErrors, sr.OmittedPackets = int64(*s.OmittedErrors), int64(*s.OmittedPackets)
		}
		if s.StartTime != nil && s.EndTime != nil {
			sr.StartTime, sr.EndTime = *s.StartTime, *s.EndTime
		}
		r.Streams = append(r.Streams, sr)
	}
	return r, nil
}

// Marshal encodes r as compact JSON.
func (r Results) Marshal() ([]byte, error) {
	if r.Streams == nil {
		r.Streams = []StreamResults{}
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("marshal results: %w", err)
	}
	return b, nil
}
