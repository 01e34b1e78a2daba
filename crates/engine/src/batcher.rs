//! Continuous batching: sequences join and leave a running batch between forward passes.
//! Every [`Batcher::step`] is one forward over all live sequences — a new one's whole prompt
//! (prefill) rides in the same pass as the others' single decode tokens, so the weights are
//! read once for everyone — then a token is sampled for each. [`crate::generate`] is a batcher
//! given all its requests at once; the server admits requests as they arrive.

use crate::Tools;
use crate::{apply_repetition_penalty, sample_logits};
use crate::{check, Completion, Finish, LanguageModel, Report, Request, TokenEvent, TokenLogprob};
use base::Result;
use tensor::Rng;

struct Live<C> {
    /// The caller's name for the sequence.
    id: usize,
    req: Request,
    cache: C,
    /// Tokens to feed at the next step: the prompt, then each new token (and forced tool output).
    pending: Vec<u32>,
    /// Prompt and output, for the repetition penalty.
    seen: Vec<u32>,
    out: Vec<u32>,
    rng: Rng,
    /// Tokens the model computed a forward pass for.
    fed: usize,
    /// Expression tokens of an open calculator call.
    call: Option<Vec<u32>>,
    report: Report,
    prompt_logprobs: Vec<TokenLogprob>,
}

impl<C> Live<C> {
    fn complete(self, finish: Finish, stop_token: Option<u32>) -> (usize, Completion) {
        (
            self.id,
            Completion {
                tokens: self.out,
                finish,
                stop_token,
                prompt_tokens: self.fed,
                prompt_logprobs: self.prompt_logprobs,
            },
        )
    }
}

/// A running batch over one model.
pub struct Batcher<'a, M: LanguageModel> {
    model: &'a M,
    tools: Option<&'a Tools<'a>>,
    live: Vec<Live<M::Cache>>,
    /// Finished outside a step (cancelled, or nothing to generate), reported by the next one.
    done: Vec<(usize, Completion)>,
    logits: Vec<f32>,
}

impl<'a, M: LanguageModel> Batcher<'a, M> {
    pub fn new(model: &'a M, tools: Option<&'a Tools<'a>>) -> Self {
        Batcher {
            model,
            tools,
            live: Vec::new(),
            done: Vec::new(),
            logits: Vec::new(),
        }
    }

    /// Sequences still generating.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty() && self.done.is_empty()
    }

    /// The ids of the sequences still generating.
    pub fn ids(&self) -> impl Iterator<Item = usize> + '_ {
        self.live.iter().map(|s| s.id)
    }

    /// Adds a sequence; it is prefilled at the next step. Fails, changing nothing, when the
    /// request does not fit the model (empty prompt, over the context, unknown token ids,
    /// invalid sampling).
    pub fn admit(&mut self, id: usize, req: Request) -> Result<()> {
        self.admit_reporting(id, req, Report::default())
    }

    /// `admit`, reporting the log-probabilities `report` asks for.
    pub fn admit_reporting(&mut self, id: usize, req: Request, report: Report) -> Result<()> {
        check(self.model, id, &req)?;
        let s = Live {
            id,
            cache: self.model.new_cache(),
            pending: req.prompt.clone(),
            seen: req.prompt.clone(),
            out: Vec::new(),
            rng: Rng::new(req.seed),
            fed: 0,
            call: None,
            report,
            prompt_logprobs: Vec::new(),
            req,
        };
        // Nothing to generate and nothing to score: done without a forward pass.
        if s.req.max_tokens == 0 && !report.prompt {
            self.done.push(s.complete(Finish::Length, None));
        } else {
            self.live.push(s);
        }
        Ok(())
    }

    /// Ends a sequence now (its completion, `Cancelled`, comes with the next step). Returns
    /// false when no live sequence has this id.
    pub fn cancel(&mut self, id: usize) -> bool {
        match self.live.iter().position(|s| s.id == id) {
            Some(i) => {
                let s = self.live.swap_remove(i);
                self.done.push(s.complete(Finish::Cancelled, None));
                true
            }
            None => false,
        }
    }

    /// One forward pass over every live sequence and one sampled token each (plus forced tool
    /// output). `on_token` sees each new token and returns false to end its sequence. Returns
    /// the sequences that finished, in no particular order.
    pub fn step(
        &mut self,
        mut on_token: impl FnMut(TokenEvent) -> bool,
    ) -> Vec<(usize, Completion)> {
        self.score_prompts();
        let mut finished = std::mem::take(&mut self.done);
        if self.live.is_empty() {
            return finished;
        }
        let (model, vocab, ctx) = (
            self.model,
            self.model.vocab_size(),
            self.model.context_len(),
        );
        self.logits.resize(self.live.len() * vocab, 0.0);
        {
            let mut batch: Vec<(&mut M::Cache, &[u32])> = self
                .live
                .iter_mut()
                .map(|s| (&mut s.cache, s.pending.as_slice()))
                .collect();
            model.forward(&mut batch, &mut self.logits);
        }
        let mut ended = vec![None; self.live.len()];
        for (row, s) in self.live.iter_mut().enumerate() {
            let r = &s.req;
            s.fed += s.pending.len();
            s.pending.clear();
            let l = &mut self.logits[row * vocab..(row + 1) * vocab];
            // The model's own distribution, before the penalty changes the logits.
            let raw = s.report.top.map(|k| (k, l.to_vec()));
            apply_repetition_penalty(l, &s.seen, r.sampling.repetition_penalty);
            let next = sample_logits(l, r.sampling, &mut s.rng);
            let mut logprob = raw.map(|(k, raw)| TokenLogprob::of(&raw, next, k));
            if r.stop.contains(&next) {
                ended[row] = Some((Finish::Stop, Some(next)));
                continue;
            }
            let mut new = vec![next];
            if let Some(t) = self.tools {
                match (&mut s.call, next) {
                    (None, id) if id == t.t.python_start => s.call = Some(Vec::new()),
                    (Some(expr), id) if id == t.t.python_end => {
                        new.extend(t.answer(expr));
                        s.call = None;
                    }
                    (Some(expr), id) => expr.push(id),
                    _ => {}
                }
            }
            // A sequence never outgrows the context or max_tokens; what does not fit is cut.
            let fed_len = model.cache_len(&s.cache);
            let room = (r.max_tokens - s.out.len()).min(ctx - fed_len);
            let fits = new.len() <= room;
            new.truncate(room);
            for (k, &tok) in new.iter().enumerate() {
                s.out.push(tok);
                s.seen.push(tok);
                let keep = on_token(TokenEvent {
                    seq: s.id,
                    token: tok,
                    forced: k > 0,
                    logprob: logprob.take(),
                    prompt_logprobs: std::mem::take(&mut s.prompt_logprobs),
                });
                if !keep {
                    ended[row] = Some((Finish::Cancelled, None));
                    break;
                }
            }
            if ended[row].is_none() {
                if fits && s.out.len() < r.max_tokens && fed_len + new.len() < ctx {
                    s.pending = new;
                } else {
                    ended[row] = Some((Finish::Length, None));
                }
            }
        }
        // Remove the finished from the back, so the rows before them keep their places.
        for row in (0..ended.len()).rev() {
            if let Some((finish, stop)) = ended[row] {
                let s = self.live.remove(row);
                finished.push(s.complete(finish, stop));
            }
        }
        finished
    }

    /// Scores the prompts of newly admitted sequences whose report asks for it: all but the
    /// last prompt token go through the model with the logits of every position kept, so the
    /// prompt is still computed once; the last is fed by the step as usual. A sequence with
    /// nothing to generate ends here.
    fn score_prompts(&mut self) {
        let model = self.model;
        for s in self.live.iter_mut() {
            if !(s.report.prompt && s.fed == 0) {
                continue;
            }
            let n = s.pending.len();
            let k = s.report.top.unwrap_or(0);
            let targets = &s.req.prompt[1..];
            let mut scored = Vec::with_capacity(n - 1);
            if n > 1 {
                let mut batch = [(&mut s.cache, &s.pending[..n - 1])];
                model.forward_all(&mut batch, &mut |_, j, row| {
                    scored.push(TokenLogprob::of(row, targets[j], k))
                });
                s.fed += n - 1;
                s.pending.drain(..n - 1);
            }
            s.prompt_logprobs = scored;
        }
        let mut row = 0;
        while row < self.live.len() {
            if self.live[row].req.max_tokens == 0 {
                let s = self.live.remove(row);
                self.done.push(s.complete(Finish::Length, None));
            } else {
                row += 1;
            }
        }
    }
}
