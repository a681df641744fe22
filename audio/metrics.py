"""Prometheus metrics of the audio process, on the app's own registry (see `watus.core.metrics`).

The figures of the issue's benchmark are all here, so the robot can be watched with the same
definitions: ASR latency and real-time factor, TTS time to first audio and real-time factor, end of
speech → transcript, the speaking queue, and frames the microphone path had to drop.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from watus.core import metrics as m

#: Real-time factor (processing time / audio duration): 0.01 (100× real time) to 3 (too slow).
RTF_BUCKETS = (0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


class AudioMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.asr_latency = m.latency_histogram(
            "watus_audio_asr_latency_seconds", "Transcription time of one utterance or upload.", r, ("source",))
        self.asr_rtf = Histogram("watus_audio_asr_rtf", "ASR processing time / audio duration.",
                                 labelnames=("source",), buckets=RTF_BUCKETS, registry=r)
        self.eos_to_transcript = m.latency_histogram(
            "watus_audio_eos_to_transcript_seconds", "VAD end of speech (t0) → transcript event.", r)
        self.tts_first_audio = m.latency_histogram(
            "watus_audio_tts_first_audio_seconds", "Text received → first synthesised audio.", r, ("source",))
        self.tts_rtf = Histogram("watus_audio_tts_rtf", "TTS synthesis time / audio duration.",
                                 labelnames=("engine",), buckets=RTF_BUCKETS, registry=r)
        self.playback_first_audio = m.latency_histogram(
            "watus_audio_say_to_playback_seconds", "`/v1/say` received → its first audio handed to the speaker.",
            r)
        self.queue_depth = m.gauge("watus_audio_speak_queue_depth", "Sentences waiting to be synthesised or "
                                   "played.", r)
        self.dropped_frames = m.counter("watus_audio_dropped_frames_total", "Microphone frames dropped "
                                        "(bounded queue full, or device overflow).", r, ("reason",))
        self.utterances = m.counter("watus_audio_utterances_total", "Utterances by outcome.", r, ("outcome",))
        self.turn_decisions = m.counter("watus_audio_turn_end_decisions_total", "End-of-turn model decisions at "
                                        "the first pause: complete, incomplete, unsure; trailing: the speculative "
                                        "words stopped where a sentence cannot, so the turn waited longer.", r,
                                        ("decision",))
        self.overlap_repairs = m.counter("watus_audio_overlap_repairs_total", "Barge-in utterances whose "
                                         "overlap with the robot's speech was repaired for ASR (repaired), or "
                                         "kept as cancelled (kept: the linear fit was not good enough).", r,
                                         ("outcome",))
        self.speculative = m.counter("watus_audio_speculative_asr_total", "Speculative transcriptions by "
                                     "outcome (used, discarded).", r, ("outcome",))
        self.interruptions = m.counter("watus_audio_interruptions_total", "Playback interrupted, by reason.",
                                       r, ("reason",))
        self.pauses = m.counter("watus_audio_playback_pauses_total", "Playback paused by speech heard while the "
                                "robot talked.", r, ("reason",))
        self.resumes = m.counter("watus_audio_playback_resumes_total", "Paused playback resumed (false "
                                 "interruptions), by reason.", r, ("reason",))
        self.aec_erle = m.gauge("watus_audio_aec_erle_db", "Echo return loss enhancement of the echo canceller "
                                "over the last seconds of playback (dB).", r)
        self.aec_cpu = m.counter("watus_audio_aec_cpu_seconds_total", "CPU time spent in the echo canceller.", r)
        self.aec_audio = m.counter("watus_audio_aec_audio_seconds_total", "Microphone audio through the echo "
                                   "canceller.", r)
        self.wake_words = m.counter("watus_audio_wake_words_total", "Wake word detections.", r, ("model",))
        self.mic_restarts = m.counter("watus_audio_mic_restarts_total", "Microphone (re)open attempts that "
                                      "failed.", r)
        self.rejected = m.counter("watus_audio_requests_rejected_total", "Requests rejected, by error code.",
                                  r, ("code",))
        self.events_dropped = m.counter("watus_audio_events_dropped_total", "Events a slow SSE client lost.", r)

    def aec_observe(self, erle_db: float | None, cpu_s: float, audio_s: float) -> None:
        if erle_db is not None:
            self.aec_erle.set(erle_db)
        self.aec_cpu.inc(cpu_s)
        self.aec_audio.inc(audio_s)
