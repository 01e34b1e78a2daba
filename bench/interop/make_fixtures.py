#!/usr/bin/env python3
"""Writes the interop crate's test fixtures with the real readers (run by
scripts/interop-fixtures.sh, after the Rust side has written fixtures/export and the
tokenizers):

    export-logits.safetensors   transformers' logits on the frugal export in fixtures/export
    export-deepseek/            an export of DeepSeek-V3's shape, with transformers' logits
    llama-gqa/                  a LlamaForCausalLM saved by transformers itself: grouped-query
                                attention, Llama 3.1 RoPE scaling, vocabulary padded past the
                                tokenizer's, a Llama-3-style chat template
    qwen2/                      a Qwen2ForCausalLM: q/k/v biases, tied embeddings, ChatML
    */logits.safetensors        transformers' logits on each, for `frugal bench logits`
    */chat.json                 conversations and the ids apply_chat_template gives them
    peft/logits.safetensors     peft's logits of frugal's adapters (fixtures/peft) loaded onto
                                transformers' model of the export
"""
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(__file__))
import hf_readers  # noqa: E402

LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CONVERSATIONS = [
    [{"role": "user", "content": "What is 48/2?"}, {"role": "assistant", "content": "It is 24."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
     {"role": "assistant", "content": "  Hello!  "}, {"role": "user", "content": "The quick brown fox?"},
     {"role": "assistant", "content": "jumps over the lazy dog"}],
]


def randomize(model, torch):
    """Norm weights and biases away from 1 and 0, so that a misplaced one shows."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                base = 0.0 if name.endswith(".bias") else 1.0
                p.copy_(base + 0.3 * torch.randn(p.shape, generator=g))


def save_checkpoint(out, model, tokenizer_json, template, bos, eos):
    import torch
    from transformers import PreTrainedTokenizerFast

    shutil.rmtree(out, ignore_errors=True)
    randomize(model, torch)
    model.save_pretrained(out)
    tok = PreTrainedTokenizerFast(tokenizer_file=tokenizer_json, bos_token=bos, eos_token=eos)
    tok.chat_template = template
    tok.save_pretrained(out)
    hf_readers.logits(out, os.path.join(out, "logits.safetensors"))
    cases = []
    for msgs in CONVERSATIONS:
        ids = tok.apply_chat_template(msgs, tokenize=True)
        prompt = tok.apply_chat_template(msgs[:-1], tokenize=True, add_generation_prompt=True)
        ids, prompt = [list(x["input_ids"] if hasattr(x, "keys") else x) for x in (ids, prompt)]
        cases.append({"messages": msgs, "ids": ids, "prompt_ids": prompt})
    json.dump(cases, open(os.path.join(out, "chat.json"), "w"), indent=1)


def peft_logits(fixtures):
    import torch
    from peft import PeftModel
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    export = os.path.join(fixtures, "export")
    tok = hf_readers.tokenizer(export)
    base = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, os.path.join(fixtures, "peft"))
    model.eval()
    tensors, meta = {}, {}
    with torch.no_grad():
        for i, text in enumerate(hf_readers.PROMPTS):
            ids = tok(text, add_special_tokens=False)["input_ids"]
            x = torch.tensor([ids], dtype=torch.int64)
            tensors[f"ids.{i}"] = x[0].clone()
            tensors[f"logits.{i}"] = model(x).logits[0].float().contiguous()
            meta[f"text.{i}"] = text
    save_file(tensors, os.path.join(fixtures, "peft", "logits.safetensors"), metadata=meta)
    print(f"PeftModel over {type(base).__name__}: {len(tensors) // 2} prompts scored")


def main(fixtures):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    hf_readers.logits(os.path.join(fixtures, "export"),
                      os.path.join(fixtures, "export-logits.safetensors"))
    hf_readers.logits(os.path.join(fixtures, "export-deepseek"),
                      os.path.join(fixtures, "export-deepseek", "logits.safetensors"))
    peft_logits(fixtures)
    torch.manual_seed(0)
    llama_tok = os.path.join(fixtures, "tokenizer-llama3.json")
    n = len(json.load(open(llama_tok))["model"]["vocab"]) + 5
    cfg = LlamaConfig(
        vocab_size=n + 3, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        rms_norm_eps=1e-5, rope_theta=500000.0, initializer_range=0.2,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
        tie_word_embeddings=False, bos_token_id=n - 5, eos_token_id=n - 1)
    save_checkpoint(os.path.join(fixtures, "llama-gqa"), LlamaForCausalLM(cfg), llama_tok,
                    LLAMA3_TEMPLATE, "<|begin_of_text|>", "<|eot_id|>")
    qwen_tok = os.path.join(fixtures, "tokenizer-chatml.json")
    n = len(json.load(open(qwen_tok))["model"]["vocab"]) + 3
    cfg = Qwen2Config(
        vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        rms_norm_eps=1e-6, rope_theta=1000000.0, initializer_range=0.2,
        tie_word_embeddings=True, bos_token_id=None, eos_token_id=n - 1)
    save_checkpoint(os.path.join(fixtures, "qwen2"), Qwen2ForCausalLM(cfg), qwen_tok,
                    CHATML_TEMPLATE, None, "<|im_end|>")


if __name__ == "__main__":
    main(sys.argv[1])
