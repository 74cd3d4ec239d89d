"""Independent float64 NumPy reference of every update, written from the papers/seeds, not the kernels."""

import numpy as np

# The notebook seed's printed AX = I final losses after 300 steps, to the digits it reports (its
# rmsprop amplifies rounding; see README), with the tolerance those digits allow.
SEED_AX_FINAL = {"gd": (0.54692, 5e-6), "rmsprop": (0.32395, 5e-6), "rmsprop+momentum": (0.000623, 5e-7)}

# every method fastrms registers must have a reference here (tests/test_kernels.py checks the keys)
REFERENCE_METHODS = ("gd", "momentum", "rmsprop", "adagrad", "adam", "adamw", "nadam", "radam", "adabelief",
                     "adamax", "adadelta", "yogi", "lion")


def reference_run(method, x0, grads, **o):
    """Apply len(grads) steps of ``method`` from x0 to the gradient sequence; returns x."""
    x = np.array(x0, dtype=np.float64)
    if method not in REFERENCE_METHODS:
        raise KeyError(method)
    lr = o.get("lr", {"adam": 1e-3, "adamw": 1e-3, "nadam": 2e-3, "radam": 1e-3, "adabelief": 1e-3,
                      "adamax": 2e-3, "adadelta": 1.0, "lion": 1e-4}.get(method, 0.01))
    wd = o.get("weight_decay", 0.01 if method == "adamw" else 0.0)
    decoupled = o.get("decoupled_weight_decay", method in ("adamw", "lion"))
    gamma = o.get("gamma", 0.9)
    eps = o.get("eps", {"adam": 1e-8, "adamw": 1e-8, "nadam": 1e-8, "radam": 1e-8, "adabelief": 1e-16,
                        "adamax": 1e-8, "yogi": 1e-3}.get(method, 1e-6))
    mu = o.get("momentum", 0.9 if method == "momentum" else 0.0)
    s = np.full_like(x, o.get("initial_scale", 0.0))
    m = np.zeros_like(x)
    b = np.zeros_like(x)
    v = np.zeros_like(x)
    vmax = np.zeros_like(x)
    delta = np.zeros_like(x)
    mu_product = 1.0
    if method == "yogi":  # Optax starts both moments at initial_accumulator_value
        m = np.full_like(x, o.get("initial_scale", 1e-6))
        v = m.copy()
    for t, g in enumerate(grads, start=1):
        g = np.asarray(g, dtype=np.float64)
        if o.get("maximize"):
            g = -g
        if "clip_norm" in o:
            g = g * (o["clip_norm"] / max(np.linalg.norm(g), o["clip_norm"]))
        before = o.get("decay_before_clip", False)  # MXNet's RMSProp and Adam: clip g + λx
        if before:
            g = g + wd * x
        if "clip_value" in o:
            g = np.clip(g, -o["clip_value"], o["clip_value"])
        if decoupled:
            x = x * (1 - lr * wd)
        elif not before:
            g = g + wd * x
        if method == "gd":
            x = x - lr * g
        elif method == "momentum":
            # torch's SGD: b₁ = g, and no dampening without momentum; autograd's: b₁ = (1 − τ) g
            damped = mu != 0 and (t > 1 or o.get("dampen_first_step", False))
            b = mu * b + ((1 - o.get("dampening", 0.0)) * g if damped else g)
            x = x - lr * (g + mu * b if o.get("nesterov") else b)
        elif method in ("rmsprop", "adagrad"):
            if method == "adagrad":
                s = s + g * g
                lr_t = lr / (1 + (t - 1) * o.get("lr_decay", 0.0))
            else:
                s = gamma * s + (1 - gamma) * g * g
                lr_t = lr
            c = 1 / (1 - gamma ** t) if o.get("bias_correction") else 1.0
            var = c * s
            if o.get("centered"):
                m = gamma * m + (1 - gamma) * g
                var = var - (c * m) ** 2
            d = np.sqrt(var + eps) if o.get("eps_in_sqrt", True) else np.sqrt(var) + eps
            u = g / d
            if mu > 0:
                if o.get("lr_in_momentum"):
                    b = mu * b + lr_t * u
                    x = x - (lr_t * u + mu * b if o.get("nesterov") else b)
                else:
                    b = mu * b + u
                    x = x - lr_t * (u + mu * b if o.get("nesterov") else b)
            else:
                x = x - lr_t * u
        elif method in ("adam", "adamw"):
            b1, b2 = o.get("beta1", 0.9), o.get("beta2", 0.999)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            bc1 = 1 - b1 ** t if o.get("bias_correction_mu", True) else 1.0
            bc2 = 1 - b2 ** t if o.get("bias_correction_nu", True) else 1.0
            if o.get("nesterov"):  # NAdam as in Optax (Dozat 2016)
                mhat = b1 * m / (1 - b1 ** (t + 1) if o.get("bias_correction_mu", True) else 1.0) \
                    + (1 - b1) * g / bc1
            else:
                mhat = m / bc1
            if o.get("v_hat"):  # Optax: AMSGrad's maximum over v̂ = v/(1 − β2ᵗ); ε_root under the root
                vmax = np.maximum(vmax, v / bc2)
                vv = vmax if o.get("amsgrad") else v / bc2
                x = x - lr * mhat / (np.sqrt(vv + o.get("eps_root", 0.0)) + eps)
                continue
            vmax = np.maximum(vmax, v)
            vv = vmax if o.get("amsgrad") else v
            if o.get("epsilon_hat"):  # Keras, TF1: ε is not bias-corrected
                x = x - lr * np.sqrt(bc2) * mhat / (np.sqrt(vv) + eps)
            else:
                x = x - lr * mhat / (np.sqrt(vv / bc2) + eps)
        elif method == "nadam":  # Dozat 2016 as torch.optim.NAdam: μ_t = β1(1 − ½·0.96^(tψ)), Π_t a product
            b1, b2, psi = o.get("beta1", 0.9), o.get("beta2", 0.999), o.get("momentum_decay", 0.004)
            mu, mu_next = (b1 * (1 - 0.5 * 0.96 ** (k * psi)) for k in (t, t + 1))
            mu_product = (mu_product if t > 1 else 1.0) * mu
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            d = np.sqrt(v / (1 - b2 ** t)) + eps
            x = x - lr * ((1 - mu) / (1 - mu_product) * g + mu_next / (1 - mu_product * mu_next) * m) / d
        elif method == "adabelief":  # Zhuang et al. 2020 as the paper's code: ε_root kept in s
            b1, b2 = o.get("beta1", 0.9), o.get("beta2", 0.999)
            bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * (g - m) ** 2 + o.get("eps_root", 1e-16)
            vv = v / bc2 if o.get("v_hat") else v  # (Optax's form: AMSGrad's maximum over v̂)
            vmax = np.maximum(vmax, vv)
            vv = vmax if o.get("amsgrad") else vv
            d = np.sqrt(vv) + eps if o.get("v_hat") else np.sqrt(vv) / np.sqrt(bc2) + eps
            x = x - lr / bc1 * m / d
        elif method == "radam":  # Liu et al. 2019, ε added to √v as in their code (epsilon_hat)
            b1, b2 = o.get("beta1", 0.9), o.get("beta2", 0.999)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            rho_inf = 2 / (1 - b2) - 1
            rho = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
            mhat = m / (1 - b1 ** t)
            if rho > o.get("threshold", 5.0):
                r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
                if o.get("epsilon_hat", True):
                    x = x - lr * r * np.sqrt(1 - b2 ** t) * mhat / (np.sqrt(v) + eps)
                else:
                    x = x - lr * r * mhat / (np.sqrt(v / (1 - b2 ** t) + o.get("eps_root", 0.0)) + eps)
            else:
                x = x - lr * mhat
        elif method == "adamax":  # Kingma & Ba 2015, §7.1; ε in the maximum (torch) or added to u (Keras)
            b1, b2 = o.get("beta1", 0.9), o.get("beta2", 0.999)
            m = b1 * m + (1 - b1) * g
            inside = o.get("eps_in_max", True)
            v = np.maximum(b2 * v, np.abs(g) + (eps if inside else 0.0))
            x = x - lr / (1 - b1 ** t) * m / (v + (0.0 if inside else eps))
        elif method == "yogi":
            b1, b2 = o.get("beta1", 0.9), o.get("beta2", 0.999)
            m = b1 * m + (1 - b1) * g
            v = v - (1 - b2) * np.sign(v - g * g) * g * g
            mhat, vhat = m / (1 - b1 ** t), v / (1 - b2 ** t)
            x = x - lr * mhat / (np.sqrt(vhat + o.get("eps_root", 0.0)) + eps)
        elif method == "lion":
            b1, b2 = o.get("beta1", 0.9), o.get("beta2", 0.99)
            c = b1 * m + (1 - b1) * g
            m = b2 * m + (1 - b2) * g
            x = x - lr * np.sign(c)
        elif method == "adadelta":
            s = gamma * s + (1 - gamma) * g * g
            dx = np.sqrt(delta + eps) / np.sqrt(s + eps) * g
            delta = gamma * delta + (1 - gamma) * dx * dx
            x = x - lr * dx
    return x


# The problem the step-by-step parity tests hand each library and fastrms alike: a least-squares
# fit of a 6 x 3 X (float64), whose gradient NumPy computes the same way for both.
PARITY_A = np.random.default_rng(0).standard_normal((12, 6))
PARITY_Y = np.random.default_rng(1).standard_normal((12, 3))
PARITY_X0 = np.random.default_rng(2).standard_normal((6, 3))


def parity_loss(X):
    return float(np.sum((PARITY_A @ X - PARITY_Y) ** 2)) / PARITY_A.shape[0]


def parity_grad(X):
    return 2.0 * PARITY_A.T @ (PARITY_A @ X - PARITY_Y) / PARITY_A.shape[0]
