"""Models: wrappers, torchvision by name, the lab's own nets, bring-your-own factories and detectors."""
