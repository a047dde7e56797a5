#!/usr/bin/python3
"""Reference fixtures for whole decoder-only models (llama, gemma, gpt_neox, gpt2).

Plain-PyTorch re-implementations of the forward passes of Hugging Face
transformers' LlamaForCausalLM, GemmaForCausalLM, GPTNeoXForCausalLM and
GPT2LMHeadModel (eager attention, no cache, no padding mask). Weights are
random float32; the reference is evaluated in float64 from those weights.

Run from the repository root:  /usr/bin/python3 packages/layers/scripts/make_fixtures.py
"""

import json
import math
import os
import shutil
import struct

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "test", "fixtures")

BATCH, SEQ = 2, 7
STD = 0.2
TRANSFORMERS_VERSION = "4.46.0"  # value written into config.json only

# ---------------------------------------------------------------- safetensors


def write_safetensors(path, tensors):
    """tensors: dict name -> float32 tensor. Layout: u64 LE header length, JSON header, data."""
    header = {"__metadata__": {"format": "pt"}}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().to(torch.float32).contiguous()
        data = t.numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)  # pad header to 8 bytes like the reference writer
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    import numpy as np

    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32"
        a, b = info["data_offsets"]
        arr = np.frombuffer(raw[base + a : base + b], dtype="<f4").reshape(info["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


# ---------------------------------------------------------------- shared ops


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def rope_cos_sin(dim, base, seq, dtype):
    # inv_freq = 1 / base^(arange(0, dim, 2) / dim); emb = cat(freqs, freqs)
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    t = torch.arange(seq, dtype=torch.float64)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)  # [seq, dim]


def apply_rope(x, cos, sin):
    # x: [b, h, t, dim]
    return x * cos[None, None] + rotate_half(x) * sin[None, None]


def causal_softmax_attn(q, k, v, scale):
    # q,k,v: [b, h, t, d]
    t = q.shape[-2]
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    mask = torch.tril(torch.ones(t, t, dtype=torch.bool))
    scores = torch.where(mask, scores, torch.tensor(torch.finfo(scores.dtype).min, dtype=scores.dtype))
    w = torch.softmax(scores, dim=-1)
    return torch.matmul(w, v)


def repeat_kv(x, n_rep):
    b, h, t, d = x.shape
    if n_rep == 1:
        return x
    return x[:, :, None].expand(b, h, n_rep, t, d).reshape(b, h * n_rep, t, d)


def rms_norm(x, w, eps):  # llama: w * x * rsqrt(mean(x^2) + eps)
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def gemma_rms_norm(x, w, eps):  # gemma: x * rsqrt(mean(x^2) + eps) * (1 + w)
    return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)) * (1.0 + w)


def gelu_tanh(x):  # gelu_new / gelu_pytorch_tanh
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def gelu_exact(x):
    return F.gelu(x)


def linear(x, w, b=None):  # nn.Linear: weight [out, in]
    y = torch.matmul(x, w.t())
    return y if b is None else y + b


def conv1d(x, w, b):  # GPT-2 Conv1D: weight [in, out]
    return torch.matmul(x, w) + b


# ---------------------------------------------------------------- models
# Each forward returns (logits, embeddings, [block outputs], final-normed hidden).


def llama_forward(cfg, p, ids):
    H, nh, nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = H // nh
    eps = cfg["rms_norm_eps"]
    b, t = ids.shape
    dt = p["model.embed_tokens.weight"].dtype
    cos, sin = rope_cos_sin(hd, cfg["rope_theta"], t, dt)
    x = p["model.embed_tokens.weight"][ids]
    emb = x
    blocks = []
    for i in range(cfg["num_hidden_layers"]):
        pre = f"model.layers.{i}."
        h = rms_norm(x, p[pre + "input_layernorm.weight"], eps)
        q = linear(h, p[pre + "self_attn.q_proj.weight"]).view(b, t, nh, hd).transpose(1, 2)
        k = linear(h, p[pre + "self_attn.k_proj.weight"]).view(b, t, nkv, hd).transpose(1, 2)
        v = linear(h, p[pre + "self_attn.v_proj.weight"]).view(b, t, nkv, hd).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k, v = repeat_kv(k, nh // nkv), repeat_kv(v, nh // nkv)
        a = causal_softmax_attn(q, k, v, hd**-0.5)
        a = a.transpose(1, 2).reshape(b, t, nh * hd)
        x = x + linear(a, p[pre + "self_attn.o_proj.weight"])
        h = rms_norm(x, p[pre + "post_attention_layernorm.weight"], eps)
        g = F.silu(linear(h, p[pre + "mlp.gate_proj.weight"]))
        u = linear(h, p[pre + "mlp.up_proj.weight"])
        x = x + linear(g * u, p[pre + "mlp.down_proj.weight"])
        blocks.append(x)
    fin = rms_norm(x, p["model.norm.weight"], eps)
    logits = linear(fin, p["lm_head.weight"])
    return logits, emb, blocks, fin


def gemma_forward(cfg, p, ids):
    H, nh, nkv, hd = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    eps = cfg["rms_norm_eps"]
    b, t = ids.shape
    dt = p["model.embed_tokens.weight"].dtype
    cos, sin = rope_cos_sin(hd, cfg["rope_theta"], t, dt)
    # normalizer = tensor(hidden**0.5, dtype=hidden_states.dtype); float32 checkpoint -> f32-rounded
    normalizer = torch.tensor(H**0.5, dtype=torch.float32).to(dt)
    x = p["model.embed_tokens.weight"][ids] * normalizer
    emb = x
    blocks = []
    for i in range(cfg["num_hidden_layers"]):
        pre = f"model.layers.{i}."
        h = gemma_rms_norm(x, p[pre + "input_layernorm.weight"], eps)
        q = linear(h, p[pre + "self_attn.q_proj.weight"]).view(b, t, nh, hd).transpose(1, 2)
        k = linear(h, p[pre + "self_attn.k_proj.weight"]).view(b, t, nkv, hd).transpose(1, 2)
        v = linear(h, p[pre + "self_attn.v_proj.weight"]).view(b, t, nkv, hd).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k, v = repeat_kv(k, nh // nkv), repeat_kv(v, nh // nkv)
        a = causal_softmax_attn(q, k, v, 1.0 / math.sqrt(hd))
        a = a.transpose(1, 2).reshape(b, t, nh * hd)
        x = x + linear(a, p[pre + "self_attn.o_proj.weight"])
        h = gemma_rms_norm(x, p[pre + "post_attention_layernorm.weight"], eps)
        g = gelu_tanh(linear(h, p[pre + "mlp.gate_proj.weight"]))
        u = linear(h, p[pre + "mlp.up_proj.weight"])
        x = x + linear(g * u, p[pre + "mlp.down_proj.weight"])
        blocks.append(x)
    fin = gemma_rms_norm(x, p["model.norm.weight"], eps)
    logits = linear(fin, p["model.embed_tokens.weight"])  # tied lm_head
    return logits, emb, blocks, fin


def neox_forward(cfg, p, ids):
    H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    hd = H // nh
    rot = int(hd * cfg["rotary_pct"])
    eps = cfg["layer_norm_eps"]
    b, t = ids.shape
    dt = p["gpt_neox.embed_in.weight"].dtype
    cos, sin = rope_cos_sin(rot, cfg["rotary_emb_base"], t, dt)
    x = p["gpt_neox.embed_in.weight"][ids]
    emb = x
    blocks = []
    for i in range(cfg["num_hidden_layers"]):
        pre = f"gpt_neox.layers.{i}."
        h = F.layer_norm(x, (H,), p[pre + "input_layernorm.weight"], p[pre + "input_layernorm.bias"], eps)
        qkv = linear(h, p[pre + "attention.query_key_value.weight"], p[pre + "attention.query_key_value.bias"])
        qkv = qkv.view(b, t, nh, 3 * hd)  # per head: [q | k | v]
        q = qkv[..., :hd].permute(0, 2, 1, 3)
        k = qkv[..., hd : 2 * hd].permute(0, 2, 1, 3)
        v = qkv[..., 2 * hd :].permute(0, 2, 1, 3)
        q = torch.cat((apply_rope(q[..., :rot], cos, sin), q[..., rot:]), dim=-1)
        k = torch.cat((apply_rope(k[..., :rot], cos, sin), k[..., rot:]), dim=-1)
        a = causal_softmax_attn(q, k, v, hd**-0.5)
        a = a.permute(0, 2, 1, 3).reshape(b, t, H)
        attn = linear(a, p[pre + "attention.dense.weight"], p[pre + "attention.dense.bias"])
        h2 = F.layer_norm(
            x, (H,), p[pre + "post_attention_layernorm.weight"], p[pre + "post_attention_layernorm.bias"], eps
        )
        m = linear(h2, p[pre + "mlp.dense_h_to_4h.weight"], p[pre + "mlp.dense_h_to_4h.bias"])
        m = linear(gelu_exact(m), p[pre + "mlp.dense_4h_to_h.weight"], p[pre + "mlp.dense_4h_to_h.bias"])
        x = m + attn + x  # use_parallel_residual
        blocks.append(x)
    fin = F.layer_norm(x, (H,), p["gpt_neox.final_layer_norm.weight"], p["gpt_neox.final_layer_norm.bias"], eps)
    logits = linear(fin, p["embed_out.weight"])
    return logits, emb, blocks, fin


def gpt2_forward(cfg, p, ids):
    H, nh = cfg["n_embd"], cfg["n_head"]
    hd = H // nh
    eps = cfg["layer_norm_epsilon"]
    b, t = ids.shape
    x = p["transformer.wte.weight"][ids] + p["transformer.wpe.weight"][torch.arange(t)][None]
    emb = x
    blocks = []
    for i in range(cfg["n_layer"]):
        pre = f"transformer.h.{i}."
        h = F.layer_norm(x, (H,), p[pre + "ln_1.weight"], p[pre + "ln_1.bias"], eps)
        qkv = conv1d(h, p[pre + "attn.c_attn.weight"], p[pre + "attn.c_attn.bias"])
        q, k, v = qkv.split(H, dim=2)  # [q(all heads) | k | v]
        q, k, v = (z.view(b, t, nh, hd).permute(0, 2, 1, 3) for z in (q, k, v))
        a = causal_softmax_attn(q, k, v, 1.0 / math.sqrt(hd))
        a = a.permute(0, 2, 1, 3).reshape(b, t, H)
        x = x + conv1d(a, p[pre + "attn.c_proj.weight"], p[pre + "attn.c_proj.bias"])
        h = F.layer_norm(x, (H,), p[pre + "ln_2.weight"], p[pre + "ln_2.bias"], eps)
        m = gelu_tanh(conv1d(h, p[pre + "mlp.c_fc.weight"], p[pre + "mlp.c_fc.bias"]))
        x = x + conv1d(m, p[pre + "mlp.c_proj.weight"], p[pre + "mlp.c_proj.bias"])
        blocks.append(x)
    fin = F.layer_norm(x, (H,), p["transformer.ln_f.weight"], p["transformer.ln_f.bias"], eps)
    logits = torch.matmul(fin, p["transformer.wte.weight"].t())  # tied lm_head
    return logits, emb, blocks, fin


# ---------------------------------------------------------------- configs + params


def llama_config():
    return {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": 32,
        "initializer_range": 0.02,
        "intermediate_size": 48,
        "max_position_embeddings": 32,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
        "vocab_size": 48,
    }


def gemma_config():
    return {
        "architectures": ["GemmaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 2,
        "eos_token_id": 1,
        "head_dim": 16,
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": 32,
        "initializer_range": 0.02,
        "intermediate_size": 48,
        "max_position_embeddings": 32,
        "model_type": "gemma",
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 1,
        "pad_token_id": 0,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
        "vocab_size": 48,
    }


def neox_config():
    return {
        "architectures": ["GPTNeoXForCausalLM"],
        "attention_bias": True,
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "classifier_dropout": 0.1,
        "eos_token_id": 0,
        "hidden_act": "gelu",
        "hidden_dropout": 0.0,
        "hidden_size": 32,
        "initializer_range": 0.02,
        "intermediate_size": 48,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 32,
        "model_type": "gpt_neox",
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "rope_scaling": None,
        "rotary_emb_base": 10000,
        "rotary_pct": 0.5,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
        "use_parallel_residual": True,
        "vocab_size": 48,
    }


def gpt2_config():
    return {
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1,
        "bos_token_id": 47,
        "embd_pdrop": 0.1,
        "eos_token_id": 47,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "gpt2",
        "n_embd": 24,
        "n_head": 4,
        "n_inner": None,
        "n_layer": 2,
        "n_positions": 32,
        "reorder_and_upcast_attn": False,
        "resid_pdrop": 0.1,
        "scale_attn_by_inverse_layer_idx": False,
        "scale_attn_weights": True,
        "summary_activation": None,
        "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "torch_dtype": "float32",
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
        "vocab_size": 48,
    }


def llama_params(cfg, g):
    """Ordered like HF's state_dict (which is the sharding order)."""
    H, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = H // cfg["num_attention_heads"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    p = {"model.embed_tokens.weight": rnd(g, V, H)}
    for i in range(cfg["num_hidden_layers"]):
        pre = f"model.layers.{i}."
        p[pre + "self_attn.q_proj.weight"] = rnd(g, nh * hd, H)
        p[pre + "self_attn.k_proj.weight"] = rnd(g, nkv * hd, H)
        p[pre + "self_attn.v_proj.weight"] = rnd(g, nkv * hd, H)
        p[pre + "self_attn.o_proj.weight"] = rnd(g, H, nh * hd)
        p[pre + "mlp.gate_proj.weight"] = rnd(g, I, H)
        p[pre + "mlp.up_proj.weight"] = rnd(g, I, H)
        p[pre + "mlp.down_proj.weight"] = rnd(g, H, I)
        p[pre + "input_layernorm.weight"] = rnd(g, H, mean=1.0)
        p[pre + "post_attention_layernorm.weight"] = rnd(g, H, mean=1.0)
    p["model.norm.weight"] = rnd(g, H, mean=1.0)
    p["lm_head.weight"] = rnd(g, V, H)
    return p


def gemma_params(cfg, g):
    H, I, V, hd = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["head_dim"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    p = {"model.embed_tokens.weight": rnd(g, V, H)}
    for i in range(cfg["num_hidden_layers"]):
        pre = f"model.layers.{i}."
        p[pre + "self_attn.q_proj.weight"] = rnd(g, nh * hd, H)
        p[pre + "self_attn.k_proj.weight"] = rnd(g, nkv * hd, H)
        p[pre + "self_attn.v_proj.weight"] = rnd(g, nkv * hd, H)
        p[pre + "self_attn.o_proj.weight"] = rnd(g, H, nh * hd)
        p[pre + "mlp.gate_proj.weight"] = rnd(g, I, H)
        p[pre + "mlp.up_proj.weight"] = rnd(g, I, H)
        p[pre + "mlp.down_proj.weight"] = rnd(g, H, I)
        p[pre + "input_layernorm.weight"] = rnd(g, H, mean=0.0)  # gemma norms scale by (1 + w)
        p[pre + "post_attention_layernorm.weight"] = rnd(g, H, mean=0.0)
    p["model.norm.weight"] = rnd(g, H, mean=0.0)
    return p


def neox_params(cfg, g):
    H, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    p = {"gpt_neox.embed_in.weight": rnd(g, V, H)}
    for i in range(cfg["num_hidden_layers"]):
        pre = f"gpt_neox.layers.{i}."
        p[pre + "input_layernorm.weight"] = rnd(g, H, mean=1.0)
        p[pre + "input_layernorm.bias"] = rnd(g, H)
        p[pre + "post_attention_layernorm.weight"] = rnd(g, H, mean=1.0)
        p[pre + "post_attention_layernorm.bias"] = rnd(g, H)
        p[pre + "attention.query_key_value.weight"] = rnd(g, 3 * H, H)
        p[pre + "attention.query_key_value.bias"] = rnd(g, 3 * H)
        p[pre + "attention.dense.weight"] = rnd(g, H, H)
        p[pre + "attention.dense.bias"] = rnd(g, H)
        p[pre + "mlp.dense_h_to_4h.weight"] = rnd(g, I, H)
        p[pre + "mlp.dense_h_to_4h.bias"] = rnd(g, I)
        p[pre + "mlp.dense_4h_to_h.weight"] = rnd(g, H, I)
        p[pre + "mlp.dense_4h_to_h.bias"] = rnd(g, H)
    p["gpt_neox.final_layer_norm.weight"] = rnd(g, H, mean=1.0)
    p["gpt_neox.final_layer_norm.bias"] = rnd(g, H)
    p["embed_out.weight"] = rnd(g, V, H)
    return p


def gpt2_params(cfg, g):
    H, V, P = cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"]
    I = cfg["n_inner"] if cfg["n_inner"] is not None else 4 * H
    p = {"transformer.wte.weight": rnd(g, V, H), "transformer.wpe.weight": rnd(g, P, H)}
    for i in range(cfg["n_layer"]):
        pre = f"transformer.h.{i}."
        p[pre + "ln_1.weight"] = rnd(g, H, mean=1.0)
        p[pre + "ln_1.bias"] = rnd(g, H)
        p[pre + "attn.c_attn.weight"] = rnd(g, H, 3 * H)  # Conv1D: [in, out]
        p[pre + "attn.c_attn.bias"] = rnd(g, 3 * H)
        p[pre + "attn.c_proj.weight"] = rnd(g, H, H)
        p[pre + "attn.c_proj.bias"] = rnd(g, H)
        p[pre + "ln_2.weight"] = rnd(g, H, mean=1.0)
        p[pre + "ln_2.bias"] = rnd(g, H)
        p[pre + "mlp.c_fc.weight"] = rnd(g, H, I)
        p[pre + "mlp.c_fc.bias"] = rnd(g, I)
        p[pre + "mlp.c_proj.weight"] = rnd(g, I, H)
        p[pre + "mlp.c_proj.bias"] = rnd(g, H)
    p["transformer.ln_f.weight"] = rnd(g, H, mean=1.0)
    p["transformer.ln_f.bias"] = rnd(g, H)
    return p


def rnd(g, *shape, mean=0.0):
    return (torch.randn(*shape, generator=g, dtype=torch.float32) * STD + mean).to(torch.float32)


FAMILIES = [
    # name, config, params, forward, seed
    ("llama", llama_config, llama_params, llama_forward, 1001),
    ("gemma", gemma_config, gemma_params, gemma_forward, 1002),
    ("gpt_neox", neox_config, neox_params, neox_forward, 1003),
    ("gpt2", gpt2_config, gpt2_params, gpt2_forward, 1004),
]

# ---------------------------------------------------------------- output


def sig(x):  # 8 significant digits keeps the fixtures small
    return float("%.8g" % x)


def flat(t):
    t = t.detach()
    return {"shape": list(t.shape), "data": [sig(v) for v in t.reshape(-1).tolist()]}


def build(name, make_cfg, make_params, forward, seed):
    cfg = make_cfg()
    g = torch.Generator().manual_seed(seed)
    params32 = make_params(cfg, g)
    V = cfg["vocab_size"]
    # ids in [1, V): avoids gemma's padding_idx 0 (its embedding row gets no gradient from the lookup in HF)
    ids = torch.randint(1, V, (BATCH, SEQ), generator=g)

    p64 = {k: v.to(torch.float64).requires_grad_(True) for k, v in params32.items()}
    logits, emb, blocks, fin = forward(cfg, p64, ids)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
    grads = torch.autograd.grad(loss, list(p64.values()))

    # float32 forward as a cross-check that the two precisions agree
    l32, _, _, _ = forward(cfg, params32, ids)
    drift = (l32.double() - logits.detach()).abs().max().item()

    expected = {
        "family": name,
        "architecture": cfg["architectures"][0],
        "note": (
            "float64 reference from the float32 weights, 8 significant digits; "
            "loss = mean cross-entropy of logits[:, :-1] vs input_ids[:, 1:]; hidden = batch row 0"
        ),
        "input_ids": {"shape": list(ids.shape), "data": ids.reshape(-1).tolist()},
        "logits": flat(logits),
        "loss": sig(loss.item()),
        # batch row 0 only, kept as [1, seq, hidden]
        "hidden": {
            "embeddings": flat(emb[:1]),
            "blocks": [flat(x[:1]) for x in blocks],
            "final_norm": flat(fin[:1]),
        },
        "grads": {k: flat(gr) for k, gr in zip(p64.keys(), grads)},
    }

    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    write_safetensors(os.path.join(d, "model.safetensors"), params32)
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(expected, f, separators=(",", ":"))
        f.write("\n")
    n = sum(v.numel() for v in params32.values())
    print(f"{name}: loss={loss.item():.6f} f32-vs-f64 max|dlogit|={drift:.2e} params={n}")
    return cfg, params32, forward, ids, logits.detach(), loss.item()


def write_sharded(cfg, params32):
    """HF-style greedy split in state_dict order into two shards plus an index."""
    d = os.path.join(OUT, "llama-sharded")
    os.makedirs(d, exist_ok=True)
    names = list(params32.keys())
    sizes = {k: params32[k].numel() * 4 for k in names}
    total = sum(sizes.values())
    # first shard takes tensors while the running size stays within half the total
    shards, acc = [[], []], 0
    for k in names:
        acc += sizes[k]
        shards[0 if acc <= total / 2 else 1].append(k)
    assert len(shards) == 2
    weight_map = {}
    for i, keys in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(os.path.join(d, fname), {k: params32[k] for k in keys})
        for k in keys:
            weight_map[k] = fname
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    for fn in ("config.json", "expected.json"):
        shutil.copyfile(os.path.join(OUT, "llama", fn), os.path.join(d, fn))


def load_folder(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            wm = json.load(f)["weight_map"]
        out = {}
        for fn in sorted(set(wm.values())):
            out.update(read_safetensors(os.path.join(d, fn)))
        assert set(out) == set(wm)
        return out
    return read_safetensors(os.path.join(d, "model.safetensors"))


def verify(name, forward, params32):
    """Reload the folder from disk and recompute logits/loss in float64."""
    d = os.path.join(OUT, name)
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(d, "expected.json")) as f:
        exp = json.load(f)
    loaded = load_folder(d)
    assert set(loaded) == set(params32), (name, set(loaded) ^ set(params32))
    for k in params32:
        assert torch.equal(loaded[k], params32[k]), (name, k)
    ids = torch.tensor(exp["input_ids"]["data"]).view(exp["input_ids"]["shape"])
    p64 = {k: v.double() for k, v in loaded.items()}
    logits, _, _, _ = forward(cfg, p64, ids)
    want = torch.tensor(exp["logits"]["data"], dtype=torch.float64).view(exp["logits"]["shape"])
    err = (logits - want).abs().max().item()
    assert err < 1e-6, (name, err)
    assert set(exp["grads"]) == set(params32)
    for k, v in exp["grads"].items():
        assert v["shape"] == list(params32[k].shape), (name, k)
    print(f"{name}: reloaded OK (max|dlogit| vs expected.json = {err:.1e})")


def self_checks(name, cfg, forward, params32, ids):
    """Causality, a finite-difference gradient probe, and fused-qkv row/column layouts."""
    p64 = {k: v.double() for k, v in params32.items()}
    base = forward(cfg, p64, ids)[0]
    ids2 = ids.clone()
    ids2[:, -1] = (ids2[:, -1] % (ids.max().item())) + 1
    assert not torch.equal(ids, ids2)
    moved = forward(cfg, p64, ids2)[0]
    assert torch.allclose(base[:, :-1], moved[:, :-1], atol=0, rtol=0), name  # no future leak

    def loss_of(pp):
        lg = forward(cfg, pp, ids)[0]
        return F.cross_entropy(lg[:, :-1].reshape(-1, lg.shape[-1]), ids[:, 1:].reshape(-1))

    key = sorted(p64)[len(p64) // 2]
    q = {k: v.clone().requires_grad_(k == key) for k, v in p64.items()}
    (g,) = torch.autograd.grad(loss_of(q), [q[key]])
    idx, eps = 0, 1e-6
    hi = {k: v.clone() for k, v in p64.items()}
    lo = {k: v.clone() for k, v in p64.items()}
    hi[key].view(-1)[idx] += eps
    lo[key].view(-1)[idx] -= eps
    fd = (loss_of(hi) - loss_of(lo)).item() / (2 * eps)
    assert abs(fd - g.view(-1)[idx].item()) < 1e-6, (name, key, fd, g.view(-1)[idx].item())

    if name == "gpt_neox":  # query of head h = output rows [h*3*hd, h*3*hd + hd)
        H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
        hd = H // nh
        w = p64["gpt_neox.layers.0.attention.query_key_value.weight"]
        x = torch.randn(H, dtype=torch.float64)
        fused = (w @ x).view(nh, 3, hd)
        for h in range(nh):
            assert torch.allclose(fused[h, 0], w[h * 3 * hd : h * 3 * hd + hd] @ x)
            assert torch.allclose(fused[h, 2], w[h * 3 * hd + 2 * hd : (h + 1) * 3 * hd] @ x)
    if name == "gpt2":  # c_attn weight [in, 3*H]: columns [0,H) q, [H,2H) k, [2H,3H) v
        H = cfg["n_embd"]
        w = p64["transformer.h.0.attn.c_attn.weight"]
        assert list(w.shape) == [H, 3 * H]
    print(f"{name}: causal + finite-difference ({key}) checks OK")


def main():
    torch.set_grad_enabled(True)
    built = {}
    for fam in FAMILIES:
        built[fam[0]] = build(*fam)
    cfg, params32, fwd, _, _, _ = built["llama"]
    write_sharded(cfg, params32)
    for name, (cfg_, params, fwd, ids, _, _) in built.items():
        verify(name, fwd, params)
        self_checks(name, cfg_, fwd, params, ids)
    verify("llama-sharded", built["llama"][2], built["llama"][1])


if __name__ == "__main__":
    main()
