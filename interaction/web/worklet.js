// AudioWorklet processors of the page (loaded with audioWorklet.addModule).
//
// "capture":  microphone at the AudioContext's rate -> the protocol's rate (16 kHz)
//             with a windowed-sinc low-pass resampler; posts one Float32Array of
//             exactly `chunkSamples` samples per chunk (200 ms), with its RMS.
// "playback": the model's audio chunks (16 kHz) -> the AudioContext's rate, played
//             back to back from a queue. A short pre-roll of silence absorbs network
//             and tick jitter; running dry is counted as a gap and re-primes with a
//             longer pre-roll (50 ms more per gap, up to 400 ms). The
//             sound card's clock is not the server's: the playback rate follows the
//             queue's average level (at most 1% off) so it neither drains nor grows,
//             and a burst (a server catching up) that queues more than
//             `maxExcessSeconds` over the target is cut back: latency beats backlog.

class Resampler {
  // Streaming band-limited resampling: output sample k sits at input position
  // k * ratio; each is the input convolved with a Blackman-windowed sinc whose
  // cutoff is below both Nyquist rates. Kernel values come from a table.
  constructor(inRate, outRate, zeroCrossings = 8, tableRes = 128) {
    this.ratio = inRate / outRate;
    this.identity = inRate === outRate;
    this.cutoff = Math.min(1, outRate / inRate) * 0.94;   // of the input Nyquist
    this.half = Math.ceil(zeroCrossings / this.cutoff);  // input samples each side
    this.res = tableRes;
    const n = this.half * tableRes + 2;
    this.table = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const x = i / tableRes;
      const w = x >= this.half ? 0 : 0.42 + 0.5 * Math.cos(Math.PI * x / this.half)
                + 0.08 * Math.cos(2 * Math.PI * x / this.half);
      const s = x === 0 ? 1 : Math.sin(Math.PI * this.cutoff * x) / (Math.PI * this.cutoff * x);
      this.table[i] = this.cutoff * s * w;
    }
    this.buf = new Float32Array(4096);
    this.len = this.half;            // history of zeros: the first outputs have context
    this.pos = this.half;            // next output's position in buf
  }

  kernel(x) {
    const t = Math.abs(x) * this.res;
    const i = t | 0;
    const f = t - i;
    return this.table[i] * (1 - f) + this.table[i + 1] * f;
  }

  // Appends input; calls emit(sample) for every output sample now computable.
  push(input, emit) {
    if (this.identity) {
      for (let i = 0; i < input.length; i++) emit(input[i]);
      return;
    }
    if (this.len + input.length > this.buf.length) {
      const bigger = new Float32Array(Math.max(this.buf.length * 2, this.len + input.length));
      bigger.set(this.buf.subarray(0, this.len));
      this.buf = bigger;
    }
    this.buf.set(input, this.len);
    this.len += input.length;
    const h = this.half, buf = this.buf;
    while (this.pos + h < this.len) {
      const p = this.pos;
      const j0 = Math.ceil(p - h), j1 = Math.floor(p + h);
      let acc = 0;
      for (let j = j0; j <= j1; j++) acc += buf[j] * this.kernel(p - j);
      emit(acc);
      this.pos += this.ratio;
    }
    // Drop what no later output needs.
    const drop = Math.floor(this.pos - h) - 1;
    if (drop > 0) {
      buf.copyWithin(0, drop, this.len);
      this.len -= drop;
      this.pos -= drop;
    }
  }
}

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions;
    this.chunkSamples = o.chunkSamples;
    this.resampler = new Resampler(sampleRate, o.outRate);
    this.chunk = new Float32Array(this.chunkSamples);
    this.fill = 0;
    this.count = 0;
    this.emit = (v) => {
      this.chunk[this.fill++] = v;
      if (this.fill === this.chunkSamples) {
        let ss = 0;
        for (let i = 0; i < this.chunkSamples; i++) ss += this.chunk[i] * this.chunk[i];
        const rms = Math.sqrt(ss / this.chunkSamples);
        this.port.postMessage({ type: "chunk", index: this.count++, audio: this.chunk,
                                rms, time: currentTime }, [this.chunk.buffer]);
        this.chunk = new Float32Array(this.chunkSamples);
        this.fill = 0;
      }
    };
    this.stopped = false;
    this.port.onmessage = (e) => { if (e.data && e.data.type === "stop") this.stopped = true; };
  }

  process(inputs) {
    if (this.stopped) return false;
    const input = inputs[0];
    if (input && input.length) {
      let mono = input[0];
      if (input.length > 1) {          // mix down
        mono = new Float32Array(input[0].length);
        for (let c = 0; c < input.length; c++)
          for (let i = 0; i < mono.length; i++) mono[i] += input[c][i] / input.length;
      }
      this.resampler.push(mono, this.emit);
    }
    return true;
  }
}

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions;
    this.inRate = o.inRate;
    this.step = this.inRate / sampleRate;          // input samples per output sample
    this.preroll = Math.round(o.prerollSeconds * this.inRate);
    this.maxExcess = o.maxExcessSeconds;
    this.chunkSeconds = o.chunkSeconds;
    this.maxPreroll = Math.round(0.4 * this.inRate);
    this.target = o.prerollSeconds + o.chunkSeconds / 2;   // mean queue level, s
    this.avgQueued = this.target;
    this.correction = 0;
    this.queue = [];                                // Float32Arrays at inRate
    this.queued = 0;                                // samples not yet read
    this.head = 0;                                  // read index in queue[0]
    this.a0 = 0; this.a1 = 0; this.frac = 0;        // interpolation state
    this.playing = false;
    this.stats = { gaps: 0, played: 0, dropped: 0, energy: 0, chunks: 0 };
    this.alpha = 128 / (sampleRate * 2);            // ~2 s average of the queue level
    this.lastReport = 0;
    this.stopped = false;
    this.port.onmessage = (e) => {
      const m = e.data;
      if (m.type === "audio") {
        if (!this.playing && this.queued === 0 && this.preroll > 0)
          this.enqueue(new Float32Array(this.preroll));   // pre-roll of silence
        this.enqueue(m.audio);
        this.stats.chunks++;
        // Never fall far behind: drop the oldest audio back to just over the target.
        if (this.queued > (this.target + this.maxExcess) * this.inRate)
          this.skip(this.queued - Math.round((this.target + this.chunkSeconds / 2) * this.inRate));
      } else if (m.type === "stop") {
        this.stopped = true;
      }
    };
  }

  enqueue(a) { this.queue.push(a); this.queued += a.length; }

  skip(n) {
    this.stats.dropped += n;
    this.queued -= n;
    while (n > 0 && this.queue.length) {
      const avail = this.queue[0].length - this.head;
      if (avail <= n) { this.queue.shift(); this.head = 0; n -= avail; }
      else { this.head += n; n = 0; }
    }
    this.avgQueued = this.queued / this.inRate;
  }

  next() {                 // the next input sample, or undefined when the queue is dry
    while (this.queue.length && this.head >= this.queue[0].length) {
      this.queue.shift();
      this.head = 0;
    }
    if (!this.queue.length) return undefined;
    this.queued--;
    return this.queue[0][this.head++];
  }

  process(inputs, outputs) {
    if (this.stopped) return false;
    const out = outputs[0][0];
    if (!this.playing && this.queued >= Math.max(this.preroll, 2)) {
      this.a0 = this.next(); this.a1 = this.next(); this.frac = 0;
      this.playing = true;
    }
    if (this.playing) {
      this.avgQueued += this.alpha * (this.queued / this.inRate - this.avgQueued);
      this.correction = Math.max(-0.01, Math.min(0.01, 0.1 * (this.avgQueued - this.target)));
    }
    const step = this.step * (1 + this.correction);
    for (let i = 0; i < out.length; i++) {
      if (!this.playing) { out[i] = 0; continue; }
      const v = this.a0 + (this.a1 - this.a0) * this.frac;
      out[i] = v;
      this.stats.energy += v * v;
      this.stats.played++;
      this.frac += step;
      while (this.frac >= 1) {
        const x = this.next();
        if (x === undefined) {        // ran dry: a gap; re-prime with a longer pre-roll
          this.playing = false;
          this.stats.gaps++;
          this.preroll = Math.min(this.maxPreroll, this.preroll + Math.round(0.05 * this.inRate));
          this.target = this.preroll / this.inRate + this.chunkSeconds / 2;
          break;
        }
        this.a0 = this.a1; this.a1 = x; this.frac -= 1;
      }
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    if (currentTime - this.lastReport > 0.25) {
      this.lastReport = currentTime;
      this.port.postMessage({ type: "stats", ...this.stats, sampleRate,
                              queuedSeconds: this.queued / this.inRate,
                              rateCorrection: this.correction,
                              prerollSeconds: this.preroll / this.inRate,
                              playing: this.playing });
    }
    return true;
  }
}

registerProcessor("capture", CaptureProcessor);
registerProcessor("playback", PlaybackProcessor);
